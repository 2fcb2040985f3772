"""The `unlearn` command: subcommands are dispatched here, before Hydra parses the arguments."""

from __future__ import annotations

import logging
import math
import shutil
import sys
from importlib.resources import files
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from unlearn_cli import __version__
from unlearn_cli.data import forget_tag
from unlearn_cli.data.spec import forget_tag_of
from unlearn_cli.errors import UserError
from unlearn_cli.record import RunRecord
from unlearn_cli.registry import unknown_choice

log = logging.getLogger("unlearn_cli")

USAGE = """usage: unlearn <command> [options] [key=value ...]

commands:
  run     run an unlearning experiment (Hydra overrides, -m for sweeps, --help for all options)
  report  aggregate run or sweep folders into one table (mean ± std over seeds)
  audit   the NeurIPS 2023 competition's forgetting-quality score over N models per side
  predict a run's model's top-3 classes for image files, to check a result by eye

examples:
  unlearn run                                   # retrain baseline, forget 'elephant'
  unlearn run forget_fraction=0.1 seed=1        # forget a random 10% of the training set
  unlearn run -m method=retrain seed=0,1,2      # a sweep, one job per seed
  unlearn report outputs/sweeps/<sweep folder>  # the sweep's table, mean ± std over seeds
  unlearn audit --methods influence,ssd --models 8 forget_fraction=0.1
"""

CONFIG_GROUPS = ("dataset", "model", "method", "evaluation")
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

OmegaConf.register_new_resolver("forget_tag", forget_tag, replace=True)


def group_options(group: str) -> list[str]:
    folder = files("unlearn_cli.configs").joinpath(group)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def check_group_choices(args: list[str]) -> None:
    """Fail with "did you mean" on an unknown dataset/model/method/evaluation name."""
    candidates, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-") and "=" in arg:
            candidates.append(arg)
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except Exception:  # noqa: BLE001 - Hydra reports malformed overrides itself
        return
    for override in overrides:
        group = override.key_or_group
        if group not in CONFIG_GROUPS or override.is_delete():
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
    # The objective a sweeper (e.g. sweep=optuna_<method>) minimises.
    return result["models"]["unlearned"]["avg_gap"]


def discard_unstarted_run(run_dir: Path) -> None:
    """Remove the folder Hydra made for a run rejected before it began (no metrics.json)."""
    if not (run_dir / "metrics.json").exists():
        logging.shutdown()  # close unlearn.log before its folder goes
        shutil.rmtree(run_dir, ignore_errors=True)


def mark_failed(cfg: DictConfig, run_dir: Path, exc: Exception) -> None:
    """Make sure a failed sweep job's folder says so, even when it failed before it began."""
    log.error("job %s failed: %s", run_dir.name, exc)
    if (run_dir / "metrics.json").is_file():
        return  # the run recorded its own failure
    try:
        tag = forget_tag_of(cfg)
        RunRecord(run_dir, cfg, tag).finish("failed", error=f"{type(exc).__name__}: {exc}")
    except Exception:  # noqa: BLE001 - a broken config must not hide the original error
        log.exception("could not write metrics.json for %s", run_dir)


def run_command(args: list[str]) -> int:
    from unlearn_cli.evaluation import sweep

    check_group_choices(args)
    sys.argv = ["unlearn run", *args]
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
        "--plots",
        type=Path,
        help="folder for metric_bars.png and tradeoff.png "
        "(default: beside --csv/--markdown, else the first PATH)",
    )
    opts = parser.parse_args(args)
    table = report.aggregate(report.per_seed_rows(report.find_metrics(opts.paths)))
    if table.empty:
        raise UserError("none of the runs under the given folders completed")
    title = report.BENCH_TITLE if opts.bench else "Unlearning report"
    preamble = report.BENCH_PREAMBLE if opts.bench else ""
    report.write_report(table, opts.csv, opts.markdown, title, preamble)
    plots_dir = opts.plots or next(
        (p.parent for p in (opts.csv, opts.markdown) if p is not None), opts.paths[0]
    )
    report.write_plots(table, plots_dir)
    for rendered in report.grouped_tables(table):
        out_console.print(rendered)
    return 0


def audit_command(args: list[str]) -> int:
    import argparse

    from hydra import compose, initialize_config_module

    from unlearn_cli import audit
    from unlearn_cli.console import make_log_handler, out_console
    from unlearn_cli.evaluation.tables import rich_table

    parser = argparse.ArgumentParser(prog="unlearn audit", description=audit.__doc__)
    parser.add_argument("--methods", default="influence", help="comma-separated method names")
    parser.add_argument("--models", type=int, default=8, help="models per side (N)")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for `unlearn run`")
    opts = parser.parse_args(args)
    if opts.models < 2:
        raise UserError(f"--models must be at least 2, got {opts.models}")
    check_group_choices(opts.overrides)
    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        cfg = compose("config", overrides=opts.overrides)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[make_log_handler()])
    tag = forget_tag_of(cfg)
    out_dir = audit.audit_dir(tag)
    methods = [m.strip() for m in opts.methods.split(",") if m.strip()]
    table = audit.run_audit(cfg, methods, opts.models, out_dir)
    out_console.print(rich_table(table, f"Forgetting quality, {opts.models} models per side"))
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"unlearn-cli {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "run":
            return run_command(rest)
        if command == "report":
            return report_command(rest)
        if command == "audit":
            return audit_command(rest)
        if command == "predict":
            return predict_command(rest)
        raise unknown_choice("command", command, ["run", "report", "audit", "predict"])
    except UserError as exc:
        print(f"unlearn: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
