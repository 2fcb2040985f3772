"""Metric tables: pandas frames written as CSV, and rich tables for people."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from rich.table import Table

from unlearn_cli.atomic import atomic_write


def model_columns() -> tuple[str, ...]:
    """The run table's rows and metrics.csv's columns: the catalogue's, in its order."""
    # Imported here: the catalogue loads torch, which `unlearn runs` (rich_table) never needs.
    from unlearn_cli.evaluation.catalogue import CATALOGUE

    return CATALOGUE.names(run_table=True)


def fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value.is_integer() and abs(value) >= 1000:  # counts
            return f"{int(value):,}"
        return f"{value:.3f}" if 0 < abs(value) < 1 else f"{value:.2f}"
    return str(value)


def rich_table(frame: pd.DataFrame, title: str, columns: Sequence[str] | None = None) -> Table:
    columns = list(columns or frame.columns)
    table = Table(title=title, header_style="bold")
    for col in columns:
        numeric = pd.api.types.is_numeric_dtype(frame[col])
        table.add_column(col, justify="right" if numeric else "left")
    for _, row in frame.iterrows():
        table.add_row(*(fmt(row[c]) for c in columns))
    return table


def write_csv(frame: pd.DataFrame, path) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False), "a metrics table")


def metrics_by_model_table(frame: pd.DataFrame, title: str, caption: str | None = None) -> Table:
    """Metrics as rows and models as columns: a few models fit any terminal width."""
    # Left-justified: the caption holds sentences (warnings, the noise floor), one per line.
    table = Table(title=title, header_style="bold", caption=caption, caption_justify="left")
    table.add_column("metric")
    for name in frame["name"]:
        table.add_column(str(name), justify="right")
    for col in model_columns():
        if frame[col].isna().all():
            continue  # nobody computed it (e.g. lira_member without evaluation=lira)
        table.add_row(col, *(fmt(v) for v in frame[col]))
    return table


def models_frame(rows: dict[str, dict[str, float]], labels: dict[str, str]) -> pd.DataFrame:
    """One row per model (original, retrain, unlearned) with the standard columns."""
    records = [
        {
            "model": role,
            "name": labels[role],
            **{c: rows[role].get(c, math.nan) for c in model_columns()},
        }
        for role in rows
    ]
    return pd.DataFrame.from_records(records)
