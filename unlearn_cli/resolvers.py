"""The OmegaConf resolvers the YAML configs use, registered once on import.

`${forget_tag:...}` names run folders by what they forget; `${registered_methods:}` is every
registered method, for `sweep=bench`. Importing `unlearn_cli.cli` (or this module) registers
them. A raw-config edge module: resolvers are OmegaConf's.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def forget_tag(*parts):
    """The run folder's name for what it forgets (unlearn_cli.data.split.forget_tag), imported
    when a config is resolved: the commands that read run folders never load torch."""
    from unlearn_cli.data.split import forget_tag as tag

    return tag(*parts)


def registered_methods() -> str:
    """Every registered method, comma-separated: `sweep=bench` sweeps over them all."""
    from unlearn_cli.methods import METHODS  # every method module: only when a sweep asks

    return ",".join(METHODS.names())


def register() -> None:
    OmegaConf.register_new_resolver("forget_tag", forget_tag, replace=True)
    OmegaConf.register_new_resolver("registered_methods", registered_methods, replace=True)


register()
