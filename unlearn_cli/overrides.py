"""Pre-checks of `unlearn run` / `unlearn audit` overrides, before Hydra creates a folder.

Malformed syntax, unknown group names ("did you mean"), presets whose plugin is missing, unknown
keys and wrong values stop here with one line. The first job is composed and validated; its
`RunConfig` is handed on, so a single run is validated once (cli.py reuses it for the job).
A raw-config edge module: it composes configs with Hydra itself.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.util
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict

from unlearn_cli.errors import UserError, first_line
from unlearn_cli.registry import unknown_choice

if TYPE_CHECKING:  # validate.py imports every method: loaded only once a job is validated
    from unlearn_cli.validate import RunConfig


@dataclass(frozen=True)
class FirstJob:
    """The first job's config as composed (plain data, without `hydra`) and as validated."""

    plain: dict
    config: RunConfig


CONFIG_GROUPS = ("dataset", "model", "method", "evaluation")
# Groups whose names are checked with "did you mean" before Hydra runs (presets included).
CHECKED_GROUPS = (*CONFIG_GROUPS, "experiment", "sweep", "variant")
# Hydra flags whose next argument is their value, not an override.
FLAGS_WITH_VALUE = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--shell-completion",
    "-sc",
    "--experimental-rerun",
}

# Presets that need an optional Hydra plugin: (module to import, the extra that installs it).
PLUGIN_PRESETS = {
    ("hydra/launcher", "parallel"): ("hydra_plugins.hydra_joblib_launcher", "parallel"),
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "parallel"),
    ("hydra/launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "ray_cluster"): ("hydra_plugins.hydra_ray_launcher", "ray"),
    ("hydra/launcher", "ray"): ("hydra_plugins.hydra_ray_launcher", "ray"),
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "tune"),
    ("sweep", "optuna_*"): ("hydra_plugins.hydra_optuna_sweeper", "tune"),
}


def group_options(group: str) -> list[str]:
    folder = files("unlearn_cli.configs").joinpath(group)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def override_args(args: list[str]) -> list[str]:
    """The key=value overrides among the command-line arguments (not flags or their values)."""
    candidates, skip, previous = [], False, ""
    for arg in args:
        if skip:
            skip = False
        elif arg in FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            if "=" not in arg and not (previous == "--info" and arg in INFO_TOPICS):
                raise UserError(f"'{arg}' is not an override: write key=value (e.g. seed=1)")
            if "=" in arg:
                candidates.append(arg)
        previous = arg
    return candidates


def check_overrides(args: list[str]) -> FirstJob | None:
    """Reject bad overrides with one line before Hydra starts: malformed syntax, unknown group
    names ("did you mean"), presets whose plugin is missing, unknown keys, wrong value types.

    Returns the first job's config (None for flags that only print the config)."""
    candidates = override_args(args)
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except OverrideParseException as exc:
        raise UserError(f"cannot parse the override: {first_line(exc)}") from None
    multirun = any(a in ("-m", "--multirun") for a in args)
    for override in overrides:
        group = override.key_or_group
        if override.is_sweep_override() and not multirun:
            raise UserError(f"{override.input_line} is a sweep: add -m to run one job per value "
                            "(a list is written [a,b])")  # fmt: skip
        check_plugin(group, override)
        if group not in CHECKED_GROUPS or override.is_delete():
            continue
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        options = group_options(group)
        for value in values:
            if value not in options:
                raise unknown_choice(group, value, options)
    return compose_first_job(overrides, args)


# Flags that print something about the config instead of running it: nothing to validate.
INSPECT_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i",
                 "--shell-completion", "-sc"}  # fmt: skip


def compose_first_job(overrides, args: list[str]) -> FirstJob | None:
    """Compose the config of the first job (first value of each sweep) and validate every node
    against its schema, so a bad key or value stops before Hydra creates a folder."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    first = []
    for override in overrides:
        key = override.input_line.split("=", 1)[0]
        if key.lstrip("+~").startswith("hydra") and key not in ("hydra.run.dir", "hydra.sweep.dir"):
            continue  # Hydra's own settings: its launcher/sweeper checks them
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                continue  # ranges and intervals are for the Optuna sweeper to sample
            first.append(f"{key}={next(iter(override.sweep_string_iterator()))}")
        else:
            first.append(override.input_line)
    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        try:
            cfg = compose("config", overrides=first, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as exc:
            raise explain_compose_error(first, exc) from None
        if not INSPECT_FLAGS.isdisjoint(args):
            return None
        return validate_job(cfg, overrides, first, args)


def validate_job(cfg: DictConfig, overrides, first: list[str], args: list[str]) -> FirstJob:
    """Every node of the first job against its schema, the other sweep values, and the
    writability of the folders the run will write; the first job's validated config."""
    from unlearn_cli.validate import check_writable, validate_config

    multirun = any(a in ("-m", "--multirun") for a in args)
    folder = Path(str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir))
    with open_dict(cfg):
        del cfg["hydra"]
    config = validate_config(cfg)
    validate_other_sweep_values(overrides, cfg, first)
    check_writable(folder.parent, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    return FirstJob(OmegaConf.to_container(cfg, resolve=True), config)


def validate_other_sweep_values(overrides, cfg: DictConfig, first: list[str]) -> None:
    """Every value of a discrete sweep, each on top of the first job, so that a bad value stops
    the sweep before its first job instead of failing jobs one by one."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from unlearn_cli.validate import validate_config

    for override in overrides:
        key = override.input_line.split("=", 1)[0]
        if not override.is_discrete_sweep() or key.lstrip("+~").startswith("hydra"):
            continue
        values = list(override.sweep_string_iterator())[1:]
        if key in CHECKED_GROUPS or "/" in key:  # another config file: compose with it
            for value in values:
                job_overrides = [*(o for o in first if o.split("=", 1)[0] != key), f"{key}={value}"]
                try:
                    job = compose("config", overrides=job_overrides)
                except (HydraException, OmegaConfBaseException) as exc:
                    raise explain_compose_error(job_overrides, exc) from None
                validate_config(job)
            continue
        for value in list(override.sweep_iterator())[1:]:
            job = cfg.copy()
            OmegaConf.update(job, key, value, merge=False)
            validate_config(job)


def explain_compose_error(first: list[str], exc: Exception) -> UserError:
    """One line for a failed compose: the override whose key the config does not have (with the
    closest existing key, or the key that replaced it), else Hydra's own first line."""
    from hydra import compose

    groups = [o for o in first if "/" in o.split("=", 1)[0] or o.split("=", 1)[0] in CHECKED_GROUPS]
    try:
        base = compose("config", overrides=groups)
    except Exception:  # noqa: BLE001 - the group choices themselves are at fault: Hydra's line
        return UserError(first_line(exc))
    missing = object()
    for override in first:
        key = override.split("=", 1)[0]
        if key.startswith(("+", "~")) or override in groups:
            continue
        if OmegaConf.select(base, key, default=missing) is missing:
            return unknown_key(key, base)
    return UserError(first_line(exc))


def unknown_key(key: str, base: DictConfig) -> UserError:
    """An override of a key the config does not have, with the closest existing key."""
    node, _, leaf = key.rpartition(".")
    if node == "method":
        from unlearn_cli.methods import METHODS, options_type

        if base.method.name in METHODS:
            renamed = options_type(base.method.name).renamed
            if leaf in renamed:
                return UserError(f"{key} was renamed to method.{renamed[leaf]} "
                                 f"(method {base.method.name})")  # fmt: skip
    known = list(dotted_keys(OmegaConf.to_container(base, resolve=False)))
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else f" (to add a new key: +{key}=...)"
    return UserError(f"unknown option '{key}'.{hint}")


def dotted_keys(node, prefix: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from dotted_keys(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip(".")


def check_plugin(group: str, override) -> None:
    """Name the extra to install when a preset's Hydra plugin is missing (not Hydra's trace)."""
    if override.is_delete() or override.is_sweep_override():
        return
    value = override.get_value_element_as_str()
    for (preset_group, pattern), (module, extra) in PLUGIN_PRESETS.items():
        matches = group == preset_group and fnmatch.fnmatch(value, pattern)
        if matches and importlib.util.find_spec(module) is None:
            raise UserError(f"{group}={value} needs a Hydra plugin that is not installed: "
                            f"pip install 'unlearn-cli[{extra}]'")  # fmt: skip
