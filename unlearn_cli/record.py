"""metrics.json of a run: written at the start (status running) and rewritten when it ends.

It records the host and process id of its run, so a run whose process died without a word
(`kill -9`, a lost node) is shown as `killed` rather than `running` forever (`run_status`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import unlearn_cli
from unlearn_cli.atomic import atomic_write_json
from unlearn_cli.data.builders import LOADING_ONLY
from unlearn_cli.errors import TrainingDiverged, WriteFailed
from unlearn_cli.fingerprint import short_hash
from unlearn_cli.liveness import this_process
from unlearn_cli.options import Options
from unlearn_cli.registry import Choice

if TYPE_CHECKING:  # the typed config: read here, never built
    from unlearn_cli.validate import RunConfig

log = logging.getLogger(__name__)


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def method_options(method: Choice, ran_with: Options | None = None) -> dict[str, Any]:
    """The method's options as a plain dict: those it ran with (per-scenario `auto` defaults
    resolved; the run's own unless `ran_with` replaced them).

    Recorded so that `unlearn report` can tell apart runs of one method with different options
    (a tuning sweep's learning rates) instead of merging them, and name what differs.
    """
    return {"name": method.name, **dataclasses.asdict(ran_with or method.options)}


# Options left out of a variant's label: how data is loaded, and where it lives.
NOT_IN_LABEL = (*LOADING_ONLY, "root", "path", "download", "verify_checksums")


def variant_label(choice: Choice) -> str:
    """The pick's name, with the options that differ from its schema's defaults:
    `animal_mnist[train_limit=2000]`, so reports keep variants of a dataset or model apart.
    Options that only change how data is loaded (not what is learnt) are left out."""
    given = flatten(dataclasses.asdict(choice.options))
    default = flatten(dataclasses.asdict(type(choice.options)()))
    changed = [
        f"{k}={v}" for k, v in given.items() if v != default.get(k) and k not in NOT_IN_LABEL
    ]
    return f"{choice.name}[{','.join(changed)}]" if changed else choice.name


def flatten(options: dict, prefix: str = "") -> dict[str, Any]:
    """Nested options as dotted keys, as they are written on the command line."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class RunRecord:
    """The run's metrics.json; every update rewrites it atomically."""

    def __init__(self, run_dir: Path, config: RunConfig, forget_tag: str) -> None:
        options = method_options(config.method)
        self._start(run_dir, {
            "dataset": variant_label(config.dataset),
            "model": variant_label(config.model),
            "method": config.method.name,
            "forget": forget_tag,
            "seed": config.run.seed,
            "device": str(config.run.device),
            "config_hash": short_hash(config.plain()),
            "method_options": options,
            "method_hash": short_hash(options),
            "reference": config.evaluation.options.reference,
        })  # fmt: skip

    @classmethod
    def unvalidated(cls, run_dir: Path, config: dict[str, Any]) -> RunRecord:
        """The record of a job whose config did not validate: `config` says what it was."""
        record = cls.__new__(cls)
        record._start(run_dir, config)
        return record

    def _start(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.path = Path(run_dir) / "metrics.json"
        self.data: dict[str, Any] = {
            "status": "running",
            "started_at": now(),
            "process": this_process(),
            "config": config,
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "unlearn_cli": unlearn_cli.__version__,
            },
        }
        self.write()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def set_method(self, method: Choice, ran_with: Options) -> None:
        """Record the options the method ran with, once the run has resolved them anew."""
        options = method_options(method, ran_with)
        self.data["config"].update(method_options=options, method_hash=short_hash(options))
        self.write()

    def finish(self, status: str, **fields: Any) -> None:
        self.update(status=status, finished_at=now(), **fields)

    def try_finish(self, status: str, **fields: Any) -> None:
        """`finish` while another error is on its way out: a failed write (the disk that made
        the run fail is full) is one log line, so the error that matters is the one reported."""
        try:
            self.finish(status, **fields)
        except WriteFailed as exc:
            log.warning("could not record status %s: %s", status, exc)

    @contextlib.contextmanager
    def failures_recorded(self) -> Iterator[None]:
        """Around a run's work: however it ends other than by `finish` (Ctrl-C, a kill or
        submitit's requeue exit; a divergence; an error), the record says so, then it is raised."""
        try:
            yield
        except (KeyboardInterrupt, SystemExit):
            self.try_finish("interrupted")
            raise
        except TrainingDiverged as exc:
            self.try_finish("diverged", error=str(exc))
            raise
        except Exception as exc:
            self.try_finish("failed", error=f"{type(exc).__name__}: {exc}")
            raise

    def write(self) -> None:
        atomic_write_json(self.path, self.data, "the run's metrics.json")
