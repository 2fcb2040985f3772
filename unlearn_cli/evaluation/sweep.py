"""The summary of a multirun sweep: one row per job, built from the jobs' metrics.json files."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from unlearn_cli.console import out_console
from unlearn_cli.evaluation.catalogue import CATALOGUE
from unlearn_cli.evaluation.tables import rich_table, write_csv
from unlearn_cli.liveness import run_status

log = logging.getLogger(__name__)

# Set by the callback when a job of the last sweep failed; the CLI turns it into the exit code.
last_sweep_failed = False


def job_row(metrics_file: Path) -> dict[str, Any]:
    data = json.loads(metrics_file.read_text(encoding="utf-8"))
    cfg = data.get("config", {})
    row: dict[str, Any] = {
        "job": metrics_file.parent.name,
        "status": run_status(data),
        "dataset": cfg.get("dataset"),
        "model": cfg.get("model"),
        "method": cfg.get("method"),
        "forget": data.get("split", {}).get("tag", cfg.get("forget")),
        "seed": cfg.get("seed"),
    }
    unlearned = data.get("models", {}).get("unlearned", {})
    row.update({c: unlearned.get(c, math.nan) for c in CATALOGUE.names(summary=True)})
    return row


def summarise_sweep(sweep_dir: Path) -> pd.DataFrame:
    """Collect every job's metrics.json below `sweep_dir` into one frame, sorted by job number."""
    rows = [job_row(f) for f in sorted(Path(sweep_dir).glob("*/metrics.json"))]
    frame = pd.DataFrame.from_records(rows)
    if not frame.empty:
        order = frame["job"].str.extract(r"^(\d+)", expand=False).astype(float)
        frame = frame.iloc[order.argsort(kind="stable")].reset_index(drop=True)
    return frame


def write_sweep_report(sweep_dir: Path) -> None:
    """The `unlearn report` table (mean ± std over seeds) and plots of the sweep, beside it."""
    from unlearn_cli.errors import UserError
    from unlearn_cli.evaluation import report

    try:
        table = report.aggregate(report.per_seed_rows(report.find_metrics([sweep_dir])))
    except UserError:
        return
    if table.empty:
        return
    report.write_report(table, sweep_dir / "report.csv", sweep_dir / "report.md",
                        f"Sweep {sweep_dir.name}")  # fmt: skip
    report.write_plots(table, sweep_dir)


class SweepSummaryCallback(Callback):
    """Writes summary.csv and prints the table once every job of a sweep has ended."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global last_sweep_failed
        last_sweep_failed = False

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global last_sweep_failed
        sweep_dir = Path(config.hydra.sweep.dir)
        frame = summarise_sweep(sweep_dir)
        if frame.empty:
            log.error("no job of the sweep in %s wrote metrics.json", sweep_dir)
            last_sweep_failed = True
            return
        write_csv(frame, sweep_dir / "summary.csv")
        failed = frame[frame["status"] != "completed"]
        last_sweep_failed = not failed.empty
        try:
            write_sweep_report(sweep_dir)
        except Exception:  # noqa: BLE001 - the summary and the exit code matter more than plots
            log.exception("could not write the sweep's report and plots")
        out_console.print(rich_table(frame, f"Sweep summary ({sweep_dir})"))
        log.info("sweep summary written to %s", sweep_dir / "summary.csv")
        if last_sweep_failed:
            log.error(
                "%d of %d jobs did not complete: %s",
                len(failed),
                len(frame),
                ", ".join(failed["job"]),
            )
