"""The `unlearn` command: subcommands are dispatched here, before Hydra parses the arguments."""

from __future__ import annotations

import difflib
import fnmatch
import importlib.util
import logging
import math
import shutil
import signal
import sys
from importlib.resources import files
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from unlearn_cli import __version__
from unlearn_cli.data import forget_tag
from unlearn_cli.data.spec import forget_tag_of
from unlearn_cli.errors import TrainingDiverged, UserError, first_line
from unlearn_cli.host_memory import keep_freed_memory
from unlearn_cli.record import RunRecord
from unlearn_cli.registry import unknown_choice

log = logging.getLogger("unlearn_cli")

USAGE = """usage: unlearn <command> [options] [key=value ...]

commands:
  run     run an unlearning experiment (Hydra overrides, -m for sweeps, --help for all options)
  report  aggregate run or sweep folders into one table (mean ± std over seeds)
  audit   the NeurIPS 2023 competition's forgetting-quality score over N models per side
  predict a run's model's top-3 classes for image files, to check a result by eye
  export  a run's unlearned model as a plain state dict and a torch.export program

examples:
  unlearn run                                   # influence vs retrain, forget 'elephant'
  unlearn run forget_fraction=0.1 seed=1        # forget a random 10% of the training set
  unlearn run -m method=retrain seed=0,1,2      # a sweep, one job per seed
  unlearn report outputs/sweeps/<sweep folder>  # the sweep's table, mean ± std over seeds
  unlearn audit --methods influence,ssd --models 8 forget_fraction=0.1
  unlearn export outputs/runs/<run folder>     # writes <run folder>/export/
"""

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

OmegaConf.register_new_resolver("forget_tag", forget_tag, replace=True)


def registered_methods() -> str:
    """Every registered method, comma-separated: `sweep=bench` sweeps over them all."""
    from unlearn_cli.methods import METHODS

    return ",".join(METHODS.names())


OmegaConf.register_new_resolver("registered_methods", registered_methods, replace=True)


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


def check_overrides(args: list[str]) -> None:
    """Reject bad overrides with one line before Hydra starts: malformed syntax, unknown group
    names ("did you mean"), presets whose plugin is missing, unknown keys, wrong value types."""
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
    compose_first_job(overrides, args)


# Flags that print something about the config instead of running it: nothing to validate.
INSPECT_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i",
                 "--shell-completion", "-sc"}  # fmt: skip


def compose_first_job(overrides, args: list[str]) -> None:
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
        if INSPECT_FLAGS.isdisjoint(args):
            validate_job(cfg, overrides, first, args)


def validate_job(cfg: DictConfig, overrides, first: list[str], args: list[str]) -> None:
    """Every node of the first job against its schema, the other sweep values, and the
    writability of the folders the run will write."""
    from unlearn_cli.validate import check_writable, validate_config

    multirun = any(a in ("-m", "--multirun") for a in args)
    folder = Path(str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir))
    with open_dict(cfg):
        del cfg["hydra"]
    validate_config(cfg)
    validate_other_sweep_values(overrides, cfg, first)
    check_writable(folder.parent, "hydra.sweep.dir" if multirun else "hydra.run.dir")


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


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def hydra_run(cfg: DictConfig) -> float:
    from unlearn_cli.run import run_experiment  # heavy imports only once Hydra has parsed argv

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        result = run_experiment(cfg, run_dir)
    except UserError as exc:
        if not multirun:
            discard_unstarted_run(run_dir)
            print(f"unlearn: error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        mark_failed(cfg, run_dir, exc)
        return math.inf  # the worst objective: a sweeper (Optuna) moves on from it
    except Exception as exc:
        if not multirun:
            raise
        log.exception("job %s failed", run_dir.name)
        mark_failed(cfg, run_dir, exc)
        return math.inf
    if result["status"] == "diverged":
        if not multirun:
            print(f"unlearn: error: {cfg.method.name} diverged (non-finite loss or weights); "
                  f"the run in {run_dir} holds its last good weights", file=sys.stderr)  # fmt: skip
            sys.exit(TrainingDiverged.exit_code)
        return math.inf
    # The objective a sweeper (e.g. sweep=optuna_<method>) minimises: val_gap, blind to the test
    # set (avg_gap is for reporting); without a retrained reference there is none.
    return result["models"]["unlearned"].get("val_gap", math.nan)


def discard_unstarted_run(run_dir: Path) -> None:
    """Remove the folder Hydra made for a run rejected before it began (no metrics.json)."""
    if not (run_dir / "metrics.json").exists():
        detach_file_logs(run_dir)  # close unlearn.log before its folder goes
        shutil.rmtree(run_dir, ignore_errors=True)


def detach_file_logs(folder: Path) -> None:
    """Close and remove the log handlers that write into `folder`."""
    for logger in (logging.getLogger(), *logging.Logger.manager.loggerDict.values()):
        for handler in list(getattr(logger, "handlers", [])):
            name = getattr(handler, "baseFilename", None)
            if name and Path(name).resolve().is_relative_to(folder.resolve()):
                handler.close()
                logger.removeHandler(handler)


def mark_failed(cfg: DictConfig, run_dir: Path, exc: Exception) -> None:
    """Make sure a failed sweep job's folder says so, even when it failed before it began."""
    log.error("job %s failed: %s", run_dir.name, exc)
    if (run_dir / "metrics.json").is_file():
        return  # the run recorded its own failure
    try:
        tag = forget_tag_of(cfg)
        RunRecord(run_dir, cfg, tag).finish("failed", error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a broken config must not hide the original error
        log.error("could not write metrics.json for %s: %s", run_dir, first_line(exc))


def run_command(args: list[str]) -> int:
    from unlearn_cli.evaluation import sweep

    check_overrides(args)
    sys.argv = ["unlearn run", *args]
    sweep.last_sweep_failed = False  # a single run after a failed sweep in the same process
    hydra_run()
    return 1 if sweep.last_sweep_failed else 0


def report_command(args: list[str]) -> int:
    import argparse

    from unlearn_cli.console import out_console
    from unlearn_cli.evaluation import report

    parser = argparse.ArgumentParser(prog="unlearn report", description=report.__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="run or sweep folders")
    parser.add_argument("--csv", type=Path, help="write the aggregated table as CSV here")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    parser.add_argument(
        "--bench", action="store_true", help="title and protocol text of BENCHMARKS.md"
    )
    parser.add_argument(
        "--note", default="", help="a paragraph for the top of the Markdown (how it was run)"
    )
    parser.add_argument(
        "--pick",
        action="store_true",
        help="a tuning sweep's pick (docs/benchmark.md): the settings that forget and keep "
        "utility on every seed, ranked by val_gap; writes pick.csv beside the report",
    )
    parser.add_argument(
        "--plots",
        type=Path,
        help="folder for metric_bars.png and tradeoff.png "
        "(default: beside --csv/--markdown, else the first PATH)",
    )
    opts = parser.parse_args(args)
    per_seed = report.per_seed_rows(report.find_metrics(opts.paths))
    table = report.aggregate(per_seed)
    if table.empty:
        raise UserError("none of the runs under the given folders completed")
    title = report.BENCH_TITLE if opts.bench else "Unlearning report"
    preamble = report.BENCH_PREAMBLE if opts.bench else ""
    if opts.note:
        preamble = f"{preamble}\n{opts.note.strip()}\n"
    report.write_report(table, opts.csv, opts.markdown, title, preamble)
    plots_dir = opts.plots or next(
        (p.parent for p in (opts.csv, opts.markdown) if p is not None), opts.paths[0]
    )
    report.write_plots(table, plots_dir)
    for rendered in report.grouped_tables(table):
        out_console.print(rendered)
    if opts.pick:
        print_pick(per_seed, plots_dir / "pick.csv")
    return 0


def print_pick(per_seed, csv_path: Path) -> None:
    """The pick rule's table and its one-line verdict per scenario (evaluation/pick.py)."""
    from unlearn_cli.console import out_console
    from unlearn_cli.evaluation import pick
    from unlearn_cli.evaluation.tables import rich_table, write_csv

    table = pick.pick_table(per_seed)
    if table.empty:
        raise UserError("--pick needs runs of a method (a tuning sweep), not only references")
    write_csv(table, csv_path)
    for scenario, part in table.groupby("scenario", sort=False):
        out_console.print(rich_table(part, f"pick rule: {scenario}", pick.PICK_COLUMNS))
    for line in pick.pick_summary(table):
        out_console.print(line)


def audit_command(args: list[str]) -> int:
    import argparse

    from hydra import compose, initialize_config_module

    from unlearn_cli import audit
    from unlearn_cli.console import make_log_handler, out_console
    from unlearn_cli.evaluation.tables import rich_table

    parser = argparse.ArgumentParser(prog="unlearn audit", description=audit.__doc__)
    parser.add_argument("--methods", default="influence", help="comma-separated method names")
    parser.add_argument("--models", type=int, default=8, help="models per side (N)")
    parser.add_argument("--sampling", default=next(iter(audit.SAMPLINGS)),
                        help="how the unlearned models are drawn: " + "; ".join(
                            f"{k}: {v}" for k, v in audit.SAMPLINGS.items()))  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="config overrides, as for `unlearn run`")
    opts = parser.parse_args(args)
    if opts.models < 2:
        raise UserError(f"--models must be at least 2, got {opts.models}")
    if opts.sampling not in audit.SAMPLINGS:
        raise unknown_choice("--sampling", opts.sampling, audit.SAMPLINGS)
    check_overrides(opts.overrides)
    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        cfg = compose("config", overrides=opts.overrides)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[make_log_handler()])
    tag = forget_tag_of(cfg)
    out_dir = audit.audit_dir(tag)
    methods = [m.strip() for m in opts.methods.split(",") if m.strip()]
    table = audit.run_audit(cfg, methods, opts.models, out_dir, opts.sampling)
    title = f"Forgetting quality, {opts.models} models per side, sampling {opts.sampling}"
    out_console.print(rich_table(table, title))
    log.info("audit written to %s", out_dir)
    return 0


def predict_command(args: list[str]) -> int:
    import argparse

    from unlearn_cli import predict

    parser = argparse.ArgumentParser(prog="unlearn predict", description=predict.__doc__)
    parser.add_argument("checkpoint", type=Path, help="a run's checkpoints/unlearned.safetensors")
    parser.add_argument("images", nargs="+", type=Path, help="image files (png, jpg, ...)")
    opts = parser.parse_args(args)
    for path, top in predict.top_classes(opts.checkpoint, opts.images):
        print(f"{path}: " + ", ".join(f"{name} {p:.2f}" for name, p in top))
    return 0


def export_command(args: list[str]) -> int:
    import argparse

    from unlearn_cli import export

    parser = argparse.ArgumentParser(
        prog="unlearn export",
        description=export.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, help="a run folder (outputs/runs/...)")
    parser.add_argument("--out", type=Path, default=None, help="folder (default RUN_DIR/export)")
    opts = parser.parse_args(args)
    for path in export.export_run(opts.run_dir, opts.out):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"unlearn-cli {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    keep_freed_memory()  # before torch allocates: see unlearn_cli/host_memory.py
    # A log file on a full disk must not print "--- Logging error ---" tracebacks: the write that
    # matters fails with its own one-line error.
    logging.raiseExceptions = False
    # A kill (SIGTERM) ends a run like Ctrl-C: metrics.json says "interrupted", no torn files.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        if command == "run":
            return run_command(rest)
        if command == "report":
            return report_command(rest)
        if command == "audit":
            return audit_command(rest)
        if command == "predict":
            return predict_command(rest)
        if command == "export":
            return export_command(rest)
        raise unknown_choice("command", command, ["run", "report", "audit", "predict", "export"])
    except UserError as exc:
        print(f"unlearn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("unlearn: interrupted; finished cache entries are kept, rerun to resume",
              file=sys.stderr)  # fmt: skip
        return 130


def interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
