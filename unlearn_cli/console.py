"""Shared rich consoles: logs and progress bars on stderr, result tables on stdout."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Off a terminal rich assumes 80 columns and wraps log lines and tables; allow wider ones there.
err_console = Console(stderr=True, width=None if Console(stderr=True).is_terminal else 160)
out_console = Console(width=None if Console().is_terminal else 160)


def make_log_handler() -> logging.Handler:
    """Console log handler for Hydra's job_logging config; shares the progress bars' console."""
    return RichHandler(console=err_console, show_path=False, markup=False, rich_tracebacks=False)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[_Bar]:
    """A rich progress bar for `total` steps; the caller calls `advance` on what it yields."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=not err_console.is_terminal,  # no frozen bars in logs of non-interactive runs
    )
    with progress:
        task = progress.add_task(description, total=total, status="")
        yield _Bar(progress, task)


class _Bar:
    def __init__(self, progress: Progress, task: int) -> None:
        self._progress = progress
        self._task = task

    def advance(self, steps: int = 1, status: str | None = None) -> None:
        if status is None:
            self._progress.advance(self._task, steps)
        else:
            self._progress.update(self._task, advance=steps, status=status)
