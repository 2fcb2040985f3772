"""Aggregate run folders into one table: mean +- std over seeds per dataset, scenario and method.

The untouched original model ("original (no unlearning)") and the retrained reference appear as
rows of their own, so every method can be read against doing nothing and against the gold standard.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch
from rich.table import Table

from unlearn_cli.atomic import atomic_write_text
from unlearn_cli.errors import UserError
from unlearn_cli.evaluation.tables import rich_table

log = logging.getLogger(__name__)

REPORT_METRICS = ("UA", "RA", "TA", "MIA", "mia_auc", "avg_gap", "time_s", "speedup")
GROUP = ["dataset", "model", "scenario", "method"]
ORIGINAL = "original (no unlearning)"


def find_metrics(paths: Iterable[Path | str]) -> list[Path]:
    """metrics.json of the given run folders, or of every run below the given sweep folders."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"no such run or sweep folder: {path}")
        found += (
            [path / "metrics.json"]
            if (path / "metrics.json").is_file()
            else sorted(path.rglob("metrics.json"))
        )
    if not found:
        raise UserError("no metrics.json found under the given folders")
    return found


def per_seed_rows(files: list[Path]) -> pd.DataFrame:
    """One row per (scenario, seed, method) from completed runs, plus original and retrain rows."""
    rows: dict[tuple, dict] = {}
    for file in files:
        data = json.loads(file.read_text(encoding="utf-8"))
        if data.get("status") != "completed":
            log.warning("skipping %s: status %s", file.parent.name, data.get("status"))
            continue
        cfg, split = data["config"], data["split"]
        base = {
            "dataset": cfg["dataset"],
            "model": cfg["model"],
            "seed": cfg["seed"],
            "scenario": f"{split['scenario']}: {split['tag']}",
        }
        roles = {"original": ORIGINAL, "retrain": "retrain"}
        if cfg["method"] != "retrain":
            roles["unlearned"] = cfg["method"]
        for role, method in roles.items():
            key = (base["dataset"], base["model"], base["scenario"], base["seed"], method)
            metrics = data["models"][role]
            rows.setdefault(
                key, {**base, "method": method, **{m: metrics.get(m) for m in REPORT_METRICS}}
            )
    return pd.DataFrame.from_records(list(rows.values()))


def aggregate(per_seed: pd.DataFrame) -> pd.DataFrame:
    """mean and std over seeds; sorted by avg_gap within each scenario."""
    numeric = per_seed[GROUP + list(REPORT_METRICS)].astype({m: float for m in REPORT_METRICS})
    grouped = numeric.groupby(GROUP, sort=False)
    table = grouped.mean()
    std = grouped.std(ddof=1)
    table = table.join(std.add_suffix("_std"))
    table["seeds"] = grouped.size()
    table = table.reset_index().sort_values(["dataset", "model", "scenario", "avg_gap"])
    return table.reset_index(drop=True)


def mean_pm_std(row: pd.Series, metric: str) -> str:
    mean, std = row[metric], row.get(f"{metric}_std")
    if pd.isna(mean):
        return "-"
    digits = 3 if metric == "mia_auc" else 2
    if pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    shown = table[GROUP + ["seeds"]].copy()
    for metric in REPORT_METRICS:
        shown[metric] = [mean_pm_std(row, metric) for _, row in table.iterrows()]
    return shown


def grouped_tables(table: pd.DataFrame) -> list[Table]:
    """One rich table per dataset / model / scenario, methods as rows: fits a terminal."""
    shown = display_frame(table)
    tables = []
    for (dataset, model, scenario), part in shown.groupby(
        ["dataset", "model", "scenario"], sort=False
    ):
        tables.append(
            rich_table(
                part, f"{dataset} / {model} / {scenario}", ["method", "seeds", *REPORT_METRICS]
            )
        )
    return tables


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.system()} {platform.release()}"
    )


def to_markdown(table: pd.DataFrame, title: str, preamble: str = "") -> str:
    shown = display_frame(table)
    lines = [f"# {title}", "", preamble.strip(), ""] if preamble else [f"# {title}", ""]
    lines += [
        f"Machine: {machine_description()}.",
        f"Written {dt.datetime.now().astimezone().isoformat(timespec='minutes')}.",
        "",
    ]
    for (dataset, model, scenario), part in shown.groupby(
        ["dataset", "model", "scenario"], sort=False
    ):
        lines += [f"## {dataset} / {model} / {scenario}", ""]
        cols = ["method", "seeds", *REPORT_METRICS]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---" if c == "method" else "---:" for c in cols) + "|")
        for _, row in part.iterrows():
            lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def write_plots(table: pd.DataFrame, folder: Path) -> list[Path]:
    from unlearn_cli.evaluation.plots import metric_bars, tradeoff_scatter

    folder = Path(folder)
    return [metric_bars(table, folder / "metric_bars.png"),
            tradeoff_scatter(table, folder / "tradeoff.png")]  # fmt: skip


def write_report(
    table: pd.DataFrame, csv: Path | None, markdown: Path | None, title: str, preamble: str = ""
) -> None:
    if csv is not None:
        atomic_write_text(csv, table.to_csv(index=False))
    if markdown is not None:
        atomic_write_text(markdown, to_markdown(table, title, preamble))


BENCH_TITLE = "Benchmarks"
BENCH_PREAMBLE = """
Written by `make bench` (`unlearn run -m sweep=bench`, then `unlearn report --bench`); do not edit
by hand. Protocol (DESIGN.md section 7): dataset animal_mnist, the default CNN, seeds 0, 1, 2; two
scenarios, class-wise (`forget_class=elephant`, 800 training images) and random
(`forget_fraction=0.1`). Each cell is mean ± sample std over the seeds. Metrics are percentages
except `mia_auc` (0-1), `time_s` (wall seconds of the unlearning step alone; for retrain, its
training) and `speedup` (retrain time_s / method time_s). `avg_gap` is the mean of |m - m_retrain|
over UA, RA, TA and MIA: lower is better, retrain is 0 by definition. Rows are sorted by avg_gap;
"original (no unlearning)" is the untouched trained model, the do-nothing reference.
Retrain's time_s is measured when the retrained model is first trained and kept with it in the
model cache; for fresh timings run `make bench` on a quiet machine after
`rm -r outputs/cache/models`.
Literature reference (CIFAR-10, ResNet-18, random 10%, SalUn Table 1): avg gap fine-tune 3.78,
gradient ascent 4.12, influence unlearning 4.06, random labels 7.15, SalUn 1.15 at 16x retrain.
"""
