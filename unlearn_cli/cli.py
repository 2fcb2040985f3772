"""The `unlearn` command: subcommands are dispatched here, before Hydra parses the arguments.

Also the Hydra job entry (`hydra_run`): the raw-config edge where Hydra's composed config becomes
the job's one `RunConfig` (or, for a config that does not validate, the plain summary its failed
record keeps). The override pre-checks live in overrides.py, the YAML's resolvers in resolvers.py.
One concept, the command line (dispatch, the job entry and the subcommands' argument parsing),
which is why it is a little over the ~350 lines of a module.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from unlearn_cli import __version__
from unlearn_cli import resolvers as resolvers  # registers the YAML's resolvers on import
from unlearn_cli.errors import TrainingDiverged, UserError, first_line
from unlearn_cli.fingerprint import short_hash
from unlearn_cli.host_memory import keep_freed_memory
from unlearn_cli.overrides import FirstJob, check_overrides
from unlearn_cli.registry import unknown_choice

if TYPE_CHECKING:
    from unlearn_cli.validate import RunConfig

log = logging.getLogger("unlearn_cli")

USAGE = """usage: unlearn <command> [options] [key=value ...]

commands:
  run     run an unlearning experiment (Hydra overrides, -m for sweeps, --help for all options)
  report  aggregate run or sweep folders into one table (mean ± std over seeds)
  audit   the NeurIPS 2023 competition's forgetting-quality score over N models per side
  predict a run's model's top-3 classes for image files, to check a result by eye
  export  a run's unlearned model as a plain state dict and a torch.export program
  runs    one table of every run under outputs/ (or PATH): filter, sort, --csv, --json
  sync-tracking  send finished run or sweep folders to MLflow, TensorBoard or CSV (once each)

examples:
  unlearn run                                   # influence vs retrain, forget 'elephant'
  unlearn run forget_fraction=0.1 seed=1        # forget a random 10% of the training set
  unlearn run -m method=retrain seed=0,1,2      # a sweep, one job per seed
  unlearn report outputs/sweeps/<sweep folder>  # the sweep's table, mean ± std over seeds
  unlearn audit --methods influence,ssd --models 8 forget_fraction=0.1
  unlearn export outputs/runs/<run folder>     # writes <run folder>/export/
  unlearn run logger=mlflow                     # also send the run to outputs/mlflow.db
  unlearn runs --where method=influence status=completed --sort avg_gap
  unlearn sync-tracking outputs/sweeps/<sweep folder> logger=mlflow
"""

# The first job as the pre-checks composed and validated it: the job Hydra composes from the same
# overrides reuses its `RunConfig` instead of validating the same config a second time.
first_job: FirstJob | None = None


def job_config(cfg: DictConfig) -> RunConfig:
    """The job's typed config, validated once: the pre-checked one when Hydra composed the same
    config (a single run, a sweep's first job in this process), else validated here."""
    from unlearn_cli.validate import validate_config

    if first_job is not None and first_job.plain == OmegaConf.to_container(cfg, resolve=True):
        return first_job.config
    return validate_config(cfg)


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def hydra_run(cfg: DictConfig) -> float:
    from unlearn_cli.run import run_experiment  # heavy imports only once Hydra has parsed argv
    from unlearn_cli.stream.run import run_stream

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    config = None
    try:
        config = job_config(cfg)
        runner = run_stream if config.stream.options.active else run_experiment
        result = runner(config, run_dir)
    except UserError as exc:
        if not multirun:
            send_to_trackers(config, run_dir)  # one that began and recorded its failure
            if not exc.keeps_folder:
                discard_unstarted_run(run_dir)
            print(f"unlearn: error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        mark_failed(cfg, config, run_dir, exc)
        send_to_trackers(config, run_dir)
        return math.inf  # the worst objective: a sweeper (Optuna) moves on from it
    except BaseException as exc:  # a failure, Ctrl-C or a kill: the trackers still hear of it
        if not multirun or not isinstance(exc, Exception):
            send_to_trackers(config, run_dir)
            raise
        log.exception("job %s failed", run_dir.name)
        mark_failed(cfg, config, run_dir, exc)
        send_to_trackers(config, run_dir)
        return math.inf
    send_to_trackers(config, run_dir)
    if result["status"] == "diverged":
        if not multirun:
            print(f"unlearn: error: {config.method.name} diverged (non-finite loss or weights); "
                  f"the run in {run_dir} holds its last good weights", file=sys.stderr)  # fmt: skip
            sys.exit(TrainingDiverged.exit_code)
        return math.inf
    # The objective a sweeper (e.g. sweep=optuna_<method>) minimises: val_gap, blind to the test
    # set (avg_gap is for reporting); without a retrained reference there is none.
    return result["models"]["unlearned"].get("val_gap", math.nan)


def send_to_trackers(config: RunConfig | None, run_dir: Path) -> None:
    """The ended run's folder to the trackers `logger` names (its config validated and its
    metrics.json written; a failing tracker is one warning)."""
    if config is None or not config.run.logger.enabled:
        return
    if not (run_dir / "metrics.json").is_file():
        return  # refused before it began: nothing to track
    from unlearn_cli.tracking.send import send_run

    send_run(run_dir, config.run.logger)


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


def mark_failed(cfg: DictConfig, config: RunConfig | None, run_dir: Path, exc: Exception) -> None:
    """Make sure a failed sweep job's folder says so, even when it failed before it began (with
    `config` None: its config did not validate)."""
    from unlearn_cli.data.spec import forget_tag_of
    from unlearn_cli.record import RunRecord

    log.error("job %s failed: %s", run_dir.name, exc)
    if (run_dir / "metrics.json").is_file():
        return  # the run recorded its own failure
    try:
        if config is None:
            record = RunRecord.unvalidated(run_dir, unvalidated_summary(cfg))
        else:
            record = RunRecord(run_dir, config, forget_tag_of(config))
        record.finish("failed", error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a broken config must not hide the original error
        log.error("could not write metrics.json for %s: %s", run_dir, first_line(exc))


def unvalidated_summary(cfg: DictConfig) -> dict:
    """What metrics.json's `config` says of a job whose config did not validate: the names as
    given, and the method node as written."""
    from unlearn_cli.data import forget_tag

    plain = OmegaConf.to_container(cfg, resolve=True)
    method, dataset = plain.get("method") or {}, plain.get("dataset") or {}
    model = plain.get("model") or {}
    tag = forget_tag(plain.get("forget_class"), plain.get("forget_fraction"),
                     dataset.get("default_forget_class"), plain.get("forget_indices_file"),
                     plain.get("forget_within"), (plain.get("stream") or {}).get("name"),
                     (plain.get("stream") or {}).get("file"),
                     (plain.get("stream") or {}).get("steps"))  # fmt: skip
    return {"dataset": str(dataset.get("name")), "model": str(model.get("name")),
            "method": method.get("name"), "forget": tag, "seed": plain.get("seed"),
            "device": str(plain.get("device")), "config_hash": short_hash(plain),
            "method_options": method, "method_hash": short_hash(method),
            "reference": (plain.get("evaluation") or {}).get("reference", "retrain")}  # fmt: skip


def run_command(args: list[str]) -> int:
    from unlearn_cli.evaluation import sweep

    global first_job
    first_job = check_overrides(args)
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
        help="folder for metric_bars.png, tradeoff.png and one plot per stream, shown in the "
        "Markdown (default: beside --csv/--markdown, else the first PATH)",
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
    plots_dir = opts.plots or next(
        (p.parent for p in (opts.csv, opts.markdown) if p is not None), opts.paths[0]
    )
    plots = report.write_plots(table, plots_dir)
    # BENCHMARKS.md keeps each stream to its summary; the CSV has every step's full table.
    report.write_report(table, opts.csv, opts.markdown, title, preamble, tuple(plots),
                        step_cells=not opts.bench)  # fmt: skip
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

    from unlearn_cli import audit
    from unlearn_cli.console import make_log_handler, out_console
    from unlearn_cli.data.spec import forget_tag_of
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
    config = audit_config(opts.overrides)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[make_log_handler()])
    out_dir = audit.audit_dir(forget_tag_of(config))
    methods = [m.strip() for m in opts.methods.split(",") if m.strip()]
    table = audit.run_audit(config, methods, opts.models, out_dir, opts.sampling)
    title = f"Forgetting quality, {opts.models} models per side, sampling {opts.sampling}"
    out_console.print(rich_table(table, title))
    log.info("audit written to %s", out_dir)
    return 0


def audit_config(overrides: list[str]) -> RunConfig:
    """The audit's config, validated once by the pre-checks (composed here for the flags that
    skip them, which an audit has none of)."""
    checked = check_overrides(overrides)
    if checked is not None:
        return checked.config
    from hydra import compose, initialize_config_module

    from unlearn_cli.validate import validate_config

    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        return validate_config(compose("config", overrides=overrides))


def runs_command(args: list[str]) -> int:
    import argparse

    from unlearn_cli.console import out_console
    from unlearn_cli.evaluation.tables import rich_table
    from unlearn_cli.tracking import runs

    parser = argparse.ArgumentParser(prog="unlearn runs", description=runs.__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=Path("outputs"),
                        help="where to look (default: outputs)")  # fmt: skip
    parser.add_argument("--where", nargs="+", default=[], metavar="COLUMN=VALUE",
                        help="keep the runs that meet every condition (=, !=, <, <=, >, >=), "
                        "e.g. --where method=influence status=completed avg_gap<5")  # fmt: skip
    parser.add_argument("--sort", default="date", help="a column; -column for descending")
    parser.add_argument("--limit", type=int, help="show at most this many runs")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    output.add_argument("--json", action="store_true", help="print JSON records")
    opts = parser.parse_args(args)
    if opts.limit is not None and opts.limit < 1:
        raise UserError(f"--limit must be at least 1, got {opts.limit}")
    table = runs.runs_table(opts.path, opts.where, opts.sort, opts.limit)
    if opts.csv:
        print(table.to_csv(index=False), end="")
    elif opts.json:
        print(table.to_json(orient="records", indent=1))
    else:
        shown = table.astype(object).where(table.notna(), "-")  # an empty cell reads "-"
        out_console.print(rich_table(shown, f"{len(table)} runs under {opts.path}"))
    return 0


def sync_command(args: list[str]) -> int:
    import argparse

    from unlearn_cli.console import make_log_handler, out_console
    from unlearn_cli.evaluation.tables import rich_table
    from unlearn_cli.tracking import send

    parser = argparse.ArgumentParser(prog="unlearn sync-tracking", description=send.sync.__doc__)
    parser.add_argument(
        "paths",
        nargs="+",
        help="run or sweep folders, then logger overrides "
        "(default logger=mlflow), e.g. logger.mlflow.tracking_uri=http://host:5000",
    )
    opts = parser.parse_args(args)
    paths = [Path(p) for p in opts.paths if "=" not in p]
    overrides = [p for p in opts.paths if "=" in p]
    for path in paths:
        if not path.is_dir():
            raise UserError(f"{path} is not a folder")
    logger = logger_options(overrides)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[make_log_handler()])
    table = send.sync(paths, logger)
    out_console.print(rich_table(table, f"{table['run'].nunique()} runs sent"))
    return 1 if table["outcome"].str.startswith("failed").any() else 0


def logger_options(overrides: list[str]):
    """The `logger` node for these overrides (logger=mlflow when none picks a tracker)."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    from unlearn_cli.options import parse
    from unlearn_cli.tracking.options import LoggerOptions

    for override in overrides:
        if not override.startswith("logger"):
            raise UserError(f"sync-tracking takes logger options only, got {override!r}")
    if not any(o.split("=")[0] in ("logger", "logger.mlflow.enabled", "logger.tensorboard.enabled",
                                   "logger.csv.enabled") for o in overrides):  # fmt: skip
        overrides = ["logger=mlflow", *overrides]
    try:
        with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
            node = compose("config", overrides=overrides)["logger"]
    except HydraException as exc:
        raise UserError(first_line(exc)) from None
    return parse(LoggerOptions, node, "logger", skip=())


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
        if command == "runs":
            return runs_command(rest)
        if command == "sync-tracking":
            return sync_command(rest)
        raise unknown_choice("command", command, ["run", "report", "audit", "predict", "export",
                                                  "runs", "sync-tracking"])  # fmt: skip
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
