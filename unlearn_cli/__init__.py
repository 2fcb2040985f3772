"""unlearn-cli: make a trained classifier forget data, and measure it against exact retraining."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("unlearn-cli")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
