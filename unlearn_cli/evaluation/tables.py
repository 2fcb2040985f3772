"""Metric tables: pandas frames written as CSV, and rich tables for people."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from rich.table import Table

from unlearn_cli.atomic import atomic_write

MODEL_COLUMNS = (
    "forget_acc", "retain_acc", "test_acc", "forget_test_acc",
    "UA", "RA", "TA", "MIA", "mia_attack_acc", "mia_auc",
    "mia_conf", "mia_entropy", "mia_m_entropy",
    "avg_gap", "val_acc", "val_MIA", "val_gap",
    "time_s", "speedup", "cost_units", "cost_ratio", "setup_s",
    "agree_forget", "js_forget", "kl_forget", "agree_test", "js_test", "kl_test",
    "weight_distance", "lira_member", "ulira_member",
    # evaluation.representation: penultimate-layer probes and CKA to the retrained model
    "probe_forget_acc", "probe_acc", "knn_forget_acc", "knn_acc", "cka_forget", "cka_test",
    # evaluation.reference=none: forget vs unseen data, and closeness to the original
    "unseen_acc", "forget_minus_unseen", "agree_orig_forget", "kl_orig_forget",
    "agree_orig_test", "kl_orig_test",
)  # fmt: skip


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
    for col in MODEL_COLUMNS:
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
            **{c: rows[role].get(c, math.nan) for c in MODEL_COLUMNS},
        }
        for role in rows
    ]
    return pd.DataFrame.from_records(records)
