"""Read a deletion request: a text or CSV file of sample ids, one per line (first column)."""

from __future__ import annotations

import csv
from pathlib import Path

from unlearn_cli.errors import UserError


def read_forget_list(path: Path | str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"forget_indices_file: no such file {path}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.reader(fh) if row and row[0].strip()]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read the forget list {path}: {exc}") from exc
    ids = [row[0].strip() for row in rows if not row[0].lstrip().startswith("#")]
    if ids and not ids[0].isdigit() and ids[0].lower() in ("id", "ids", "index", "path", "file"):
        ids = ids[1:]  # a header line
    return ids
