"""Training curves: what each training loop of a run did, epoch by epoch or step by step.

A loop calls `record(loop, step, loss=..., acc=...)`; nothing happens unless a `recording`
is active. The run records the original's and the references' trainings (the model cache
keeps their curves with the entry, so a cache hit still has them) and the method's own loops,
and writes them to the run folder's `curves.csv` (model, loop, step, then the values), which the
trackers read (unlearn_cli/tracking).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from unlearn_cli.atomic import atomic_write_text

FILE = "curves.csv"

_active: contextvars.ContextVar[Curves | None] = contextvars.ContextVar("curves", default=None)


@dataclass
class Curves:
    """The rows recorded under one model's name (`model`); `loop` names them all when set (a
    cached model's training is its `train` loop, whatever its loops called themselves)."""

    model: str
    loop: str | None = None
    rows: list[dict] = field(default_factory=list)

    def add(self, rows: list[dict], model: str) -> None:
        """`rows` under `model`; a second model of the same name (the noise floor's retrain of
        another seed) gets a number."""
        taken = {row["model"] for row in self.rows}
        name, n = model, 2
        while name in taken:
            name, n = f"{model}_{n}", n + 1
        self.rows.extend({**row, "model": name} for row in rows)


@contextmanager
def recording(model: str, loop: str | None = None) -> Iterator[Curves]:
    """Collect the curves recorded inside under `model`; they also go to the enclosing
    recording, if any."""
    mine = Curves(model, loop)
    parent = _active.get()
    token = _active.set(mine)
    try:
        yield mine
    finally:
        _active.reset(token)
        if parent is not None and mine.rows:
            parent.add(mine.rows, model)


def record(loop: str, step: int, **values: float) -> None:
    """One point of `loop`'s curve (step 1 is the first epoch or step); a no-op outside a
    recording."""
    curves = _active.get()
    if curves is None:
        return
    clean = {k: float(v) for k, v in values.items() if v is not None}
    curves.rows.append({"model": curves.model, "loop": curves.loop or loop, "step": int(step),
                        **clean})  # fmt: skip


def replay(rows: list[dict], model: str) -> None:
    """Stored curves (a cache hit's) into the active recording under `model`."""
    curves = _active.get()
    if curves is not None and rows:
        curves.add(rows, model)


def write_curves(folder: Path, curves: Curves) -> None:
    """`curves.csv` in the run folder (nothing when no loop recorded anything)."""
    if not curves.rows:
        return
    table = pd.DataFrame(curves.rows)
    front = ["model", "loop", "step"]
    table = table[front + [c for c in table.columns if c not in front]]
    atomic_write_text(folder / FILE, table.to_csv(index=False), "curves.csv")


def read_curves(folder: Path) -> pd.DataFrame:
    """A run folder's curves.csv, or an empty table."""
    path = folder / FILE
    if not path.is_file():
        return pd.DataFrame(columns=["model", "loop", "step"])
    return pd.read_csv(path)
