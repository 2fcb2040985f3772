"""Unlearning methods: one module per method, named like its config and registry key.

Every module of this package is imported, so a new method is its module (registered with
`@METHODS.register`) and its `configs/method/<name>.yaml`, nothing else.
"""

import importlib
import pkgutil

from unlearn_cli.methods.base import (
    METHODS,
    UnlearnContext,
    UnlearnMethod,
    log_method_defaults,
    memorised_options,
    method_options,
    note_memorised_original,
    options_type,
    run_method,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METHODS",
    "UnlearnContext",
    "UnlearnMethod",
    "log_method_defaults",
    "memorised_options",
    "method_options",
    "note_memorised_original",
    "options_type",
    "run_method",
]
