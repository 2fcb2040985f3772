"""`unlearn runs [PATH]`: one table of every run folder under outputs/ (single runs, sweeps'
jobs, streams, audits), filtered and sorted, as a terminal table, CSV or JSON.

It reads each folder's metrics.json (audit.json for an audit) and nothing else, and it does not
descend into a run folder or the model cache.
"""

from __future__ import annotations

import json
import math
import operator
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from unlearn_cli.errors import UserError
from unlearn_cli.liveness import run_status
from unlearn_cli.tracking.folder import walk

COLUMNS = ["date", "dataset", "model", "method", "scenario", "seed", "status", "avg_gap",
           "cost_ratio", "folder"]  # fmt: skip
NUMERIC = {"seed", "avg_gap", "cost_ratio"}
# --where's comparisons, longest first so that `<=` is not read as `<`.
COMPARISONS = {"!=": operator.ne, ">=": operator.ge, "<=": operator.le, "=": operator.eq,
               ">": operator.gt, "<": operator.lt}  # fmt: skip
CONDITION = re.compile(r"^([a-z_]+)(!=|>=|<=|=|>|<)(.*)$")


def find_runs(root: Path) -> list[dict[str, Any]]:
    """A row for every run folder and audit at or under `root`."""
    return [run_row(f) if kind == "run" else audit_row(f) for f, kind in walk(root)]


def run_row(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {**dict.fromkeys(COLUMNS, None), "status": "unreadable", "folder": str(folder)}
    config = data.get("config", {})
    unlearned = (data.get("models") or {}).get("unlearned") or {}
    return {
        "date": str(data.get("started_at", ""))[:19].replace("T", " "),
        "dataset": config.get("dataset"),
        "model": config.get("model"),
        "method": config.get("method"),
        "scenario": config.get("forget"),
        "seed": config.get("seed"),
        "status": run_status(data),
        "avg_gap": number(unlearned.get("avg_gap")),
        "cost_ratio": number(unlearned.get("cost_ratio")),
        "folder": str(folder),
    }


def audit_row(folder: Path) -> dict[str, Any]:
    """An `unlearn audit` folder: its methods, its scenario, no single gap."""
    try:
        data = json.loads((folder / "audit.json").read_text(encoding="utf-8"))
        stamp = datetime.fromtimestamp((folder / "audit.json").stat().st_mtime)
    except (OSError, ValueError):
        return {**dict.fromkeys(COLUMNS, None), "status": "unreadable", "folder": str(folder)}
    methods = sorted({str(r.get("method")) for r in data.get("rows", []) if r.get("method")})
    return {**dict.fromkeys(COLUMNS, None), "date": f"{stamp:%Y-%m-%d %H:%M:%S}",
            "method": "audit: " + ",".join(methods),
            "scenario": (data.get("forget") or {}).get("tag"), "status": "completed",
            "folder": str(folder)}  # fmt: skip


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def parse_conditions(conditions: list[str]) -> list[tuple[str, Any, Any]]:
    """`--where` conditions (column=value, !=, <, <=, >, >=), checked before any folder is
    read."""
    parsed = []
    for text in conditions:
        match = CONDITION.match(text.strip())
        if not match:
            raise UserError(f"--where {text!r}: write column=value (or !=, <, <=, >, >=), e.g. "
                            "method=influence")  # fmt: skip
        column, op, value = match.groups()
        if column not in COLUMNS:
            raise UserError(f"--where {text!r}: no column {column!r}; the columns are "
                            f"{', '.join(COLUMNS)}")  # fmt: skip
        if column in NUMERIC:
            try:
                value = float(value)
            except ValueError:
                raise UserError(f"--where {text!r}: {column} is a number") from None
        elif op not in ("=", "!="):
            raise UserError(f"--where {text!r}: {column} is text; compare it with = or !=")
        parsed.append((column, COMPARISONS[op], value))
    return parsed


def keep(row: dict[str, Any], conditions: list[tuple[str, Any, Any]]) -> bool:
    for column, compare, value in conditions:
        cell = row.get(column)
        if cell is None:
            return False
        if column in NUMERIC:
            if not compare(float(cell), value):
                return False
        elif not compare(str(cell), value):
            return False
    return True


def runs_table(root: Path, where: list[str], sort: str, limit: int | None) -> pd.DataFrame:
    """The runs under `root` that meet every `where` condition, sorted by `sort` (a column, with
    a leading - for descending; empty cells last)."""
    conditions = parse_conditions(where)
    descending = sort.startswith("-")
    column = sort.lstrip("-")
    if column not in COLUMNS:
        raise UserError(f"--sort {sort!r}: no column {column!r}; the columns are "
                        f"{', '.join(COLUMNS)}")  # fmt: skip
    if not Path(root).is_dir():
        raise UserError(f"{root} is not a folder")
    rows = [row for row in find_runs(Path(root)) if keep(row, conditions)]
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table.sort_values(column, ascending=not descending, na_position="last",
                              kind="stable")  # fmt: skip
    if limit is not None:
        table = table.head(limit)
    return table.reset_index(drop=True)
