"""The report for people and files: one rich table per dataset / model / scenario, the same as
Markdown (and BENCHMARKS.md), the CSV, and the bar and trade-off plots (evaluation/plots.py).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
from rich.table import Table

from unlearn_cli.atomic import atomic_write_text
from unlearn_cli.evaluation.catalogue import CATALOGUE
from unlearn_cli.evaluation.metrics import UTILITY_POINTS
from unlearn_cli.evaluation.report.aggregate import DAMAGED, WITHIN
from unlearn_cli.evaluation.report.collect import CELL, DIVERGED, FLOOR, GROUP, aggregated
from unlearn_cli.evaluation.report.inside import FORGOTTEN_IN, INSIDE_CAPTION, forgotten_in
from unlearn_cli.evaluation.report.streams import stream_steps, stream_summaries
from unlearn_cli.evaluation.tables import rich_table
from unlearn_cli.host import machine_description

FLOOR_CAPTION = (
    f'"{FLOOR}": the gap between retrained models of different seeds, the noise floor; '
    f"{WITHIN} = yes where a row's mean avg_gap is at most the floor's, i.e. it cannot be told "
    "from retraining at these seeds."
)
STREAM_CAPTION = (
    "avg_gap to each step's oracle (mean over seeds); UA_earlier drift: UA on the earlier "
    "requests, last step minus the first that has some (negative: the model re-learns what it "
    "forgot); RA drift: last step minus first (negative: erosion); gap last/first: the last "
    "step's avg_gap over the first's (a single request on the original); cum_cost_ratio: the "
    "oracles' counted passes over the method's, over the whole stream."
)
STEP_CELLS_NOTE = (
    "Each stream step's full table (every metric, every method, ± std) is in the CSV "
    "(scenario `stream-<name>, step <k>: ...`); `unlearn report` on a stream sweep prints them."
)
DIVERGED_CAPTION = (
    f"{DIVERGED} = on how many seeds the method diverged (non-finite loss or weights): those "
    "runs' unlearned model is its last good weights, counted in the row as they are."
)
DAMAGED_CAPTION = (
    f"{DAMAGED} = yes where a row's mean TA or RA is more than {UTILITY_POINTS:g} points below "
    "retrain's: it forgot by wrecking the model, which its avg_gap does not show."
)


def mean_pm_std(row: pd.Series, metric: str) -> str:
    mean, std = row[metric], row.get(f"{metric}_std")
    if pd.isna(mean):
        return "-"
    digits = CATALOGUE.get(metric).digits
    if pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    shown = table[GROUP + ["seeds"]].copy()
    for metric in aggregated():
        shown[metric] = [mean_pm_std(row, metric) for _, row in table.iterrows()]
    shown[WITHIN] = table.get(WITHIN, "")
    shown[DAMAGED] = table.get(DAMAGED, "")
    counts = table.get(DIVERGED, pd.Series(0, index=table.index)).fillna(0).astype(int)
    shown[DIVERGED] = [f"{n} of {s}" if n else "" for n, s in zip(counts, table["seeds"],
                                                                  strict=True)]  # fmt: skip
    shown[FORGOTTEN_IN] = forgotten_in(table)
    return shown


def inside_columns(part: pd.DataFrame, raw: pd.DataFrame) -> list[str]:
    """The representation table's columns: the figures some run measured, and the verdict."""
    cols = [c for c in CATALOGUE.names(report="inside") if not raw[c].isna().all()]
    if not cols:
        return []
    verdict = [FORGOTTEN_IN] if (part[FORGOTTEN_IN] != "").any() else []
    return ["method", "seeds", *cols, *verdict]


def cell_columns(part: pd.DataFrame, raw: pd.DataFrame) -> list[str]:
    """The shown columns of one table (`part` displayed, `raw` its numbers): within_floor,
    beside avg_gap, only where a floor exists; metrics that need an option (or the retrained
    reference) only where some run measured them."""
    measured = [m for m in CATALOGUE.names(report="main")
                if not CATALOGUE.get(m).only_if_measured or not raw[m].isna().all()]  # fmt: skip
    cols = ["method", "seeds", *measured]
    if (part["method"] == FLOOR).any() and "avg_gap" in cols:
        cols.insert(cols.index("avg_gap") + 1, WITHIN)
    if (part[DAMAGED] == "yes").any():
        cols.insert(cols.index("method") + 1, DAMAGED)
    if (part[DIVERGED] != "").any():
        cols.insert(cols.index("method") + 1, DIVERGED)
    return cols


def grouped_tables(table: pd.DataFrame) -> list[Table]:
    """One rich table per dataset / model / scenario, methods as rows: fits a terminal."""
    shown = display_frame(table)
    tables = []
    for (dataset, model, scenario), part in shown.groupby(CELL, sort=False):
        columns = cell_columns(part, table.loc[part.index])
        rendered = rich_table(part, f"{dataset} / {model} / {scenario}", columns)
        # Labels and the mark are what one reads a row by: let the ± cells wrap, never these.
        for column in rendered.columns:
            if column.header in ("method", WITHIN, DAMAGED, DIVERGED):
                column.no_wrap, column.min_width = True, len(column.header)
        captions = {WITHIN: FLOOR_CAPTION, DAMAGED: DAMAGED_CAPTION, DIVERGED: DIVERGED_CAPTION}
        rendered.caption = " ".join(t for c, t in captions.items() if c in columns) or None
        tables.append(rendered)
        inside = inside_columns(part, table.loc[part.index])
        if inside:
            extra = rich_table(part, f"{dataset} / {model} / {scenario}: inside the model", inside)
            extra.caption = INSIDE_CAPTION
            tables.append(extra)
    for title, summary in stream_summaries(table):
        rendered = rich_table(summary, title)
        rendered.caption = STREAM_CAPTION
        tables.append(rendered)
    return tables


def to_markdown(table: pd.DataFrame, title: str, preamble: str = "", plots: tuple = (),
                step_cells: bool = True) -> str:  # fmt: skip
    """The report as Markdown; `plots`: image paths (relative to the file) shown at its end;
    `step_cells=False` leaves out each stream step's full table (the stream summaries stay)."""
    shown = display_frame(table)
    lines = [f"# {title}", "", preamble.strip(), ""] if preamble else [f"# {title}", ""]
    lines += [
        f"Machine: {machine_description()}.",
        f"Written {dt.datetime.now().astimezone().isoformat(timespec='minutes')}.",
        "",
    ]
    steps = stream_steps(shown).index
    for (dataset, model, scenario), part in shown.groupby(CELL, sort=False):
        if not step_cells and part.index.isin(steps).all():
            continue
        lines += [f"## {dataset} / {model} / {scenario}", ""]
        cols = cell_columns(part, table.loc[part.index])
        if WITHIN in cols:
            lines += [FLOOR_CAPTION, ""]
        if DAMAGED in cols:
            lines += [DAMAGED_CAPTION, ""]
        if DIVERGED in cols:
            lines += [DIVERGED_CAPTION, ""]
        lines += markdown_rows(part, cols)
        inside = inside_columns(part, table.loc[part.index])
        if inside:
            lines += ["### Inside the model", "", INSIDE_CAPTION, "", *markdown_rows(part, inside)]
    for title, summary in stream_summaries(table):
        lines += [f"## {title}", "", STREAM_CAPTION, ""]
        if not step_cells:
            lines += [STEP_CELLS_NOTE, ""]
        lines += markdown_rows(summary, list(summary.columns))
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).as_posix()})\n" for p in plots]
    return "\n".join(lines)


def markdown_rows(part: pd.DataFrame, cols: list[str]) -> list[str]:
    lines = ["| " + " | ".join(cols) + " |",
             "|" + "|".join(markdown_align(c) for c in cols) + "|"]  # fmt: skip
    lines += ["| " + " | ".join(str(row[c]) for c in cols) + " |" for _, row in part.iterrows()]
    return [*lines, ""]


def markdown_align(column: str) -> str:
    return {"method": "---", WITHIN: ":---:", DAMAGED: ":---:", DIVERGED: ":---:",
            FORGOTTEN_IN: ":---:"}.get(column, "---:")  # fmt: skip


def write_plots(table: pd.DataFrame, folder: Path) -> list[Path]:
    """The report's bar and trade-off plots, without the floor row.

    The floor is a gap between two retrains, not a model: its UA/RA/TA/MIA would repeat
    retrain's bars, and it has no time to place it on the trade-off plot.
    """
    from unlearn_cli.evaluation.plots import metric_bars, stream_methods_plot, tradeoff_scatter

    folder = Path(folder)
    table = table[table["method"] != FLOOR]
    written = [metric_bars(table, folder / "metric_bars.png"),
               tradeoff_scatter(table, folder / "tradeoff.png")]  # fmt: skip
    cells = stream_steps(table).groupby(["dataset", "model", "stream"], sort=False)
    seen: set[str] = set()
    for (dataset, model, stream), part in cells:
        # the first cell of a stream is stream-<name>.png; others (another dataset or variant)
        # add what tells them apart
        name = stream if stream not in seen else f"{stream}-{slug(dataset)}-{slug(model)}"
        seen.add(stream)
        written.append(stream_methods_plot(part, f"{dataset} / {model} / {stream}",
                                           folder / f"{name}.png"))  # fmt: skip
    return written


def slug(text: str) -> str:
    """A file-name-safe form of a dataset or model label (`cnn[train.epochs=40]` -> `cnn-
    train.epochs-40`)."""
    import re

    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-")


def write_report(
    table: pd.DataFrame,
    csv: Path | None,
    markdown: Path | None,
    title: str,
    preamble: str = "",
    plots: tuple = (),
    step_cells: bool = True,
) -> None:
    if csv is not None:
        atomic_write_text(csv, table.to_csv(index=False), "the report CSV")
    if markdown is not None:
        shown = tuple(relative_to_file(p, markdown) for p in plots)
        text = to_markdown(table, title, preamble, shown, step_cells)
        atomic_write_text(markdown, text, "the report Markdown")


def relative_to_file(path: Path, markdown: Path) -> Path:
    """`path` as a link from the Markdown file `markdown` (absolute when that cannot be)."""
    import os

    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(markdown).resolve().parent))
    except ValueError:  # another drive
        return Path(path).resolve()
