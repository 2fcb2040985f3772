"""metrics.json of a run: written at the start (status running) and rewritten when it ends.

It records the host and process id of its run, so a run whose process died without a word
(`kill -9`, a lost node) is shown as `killed` rather than `running` forever (`run_status`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import platform
import socket
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import unlearn_cli
from unlearn_cli.atomic import atomic_write_json
from unlearn_cli.errors import WriteFailed
from unlearn_cli.fingerprint import short_hash

log = logging.getLogger(__name__)


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def this_process() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, Linux), to tell it from a later
    process that got the same id; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces


def process_alive(process: dict[str, Any]) -> bool | None:
    """Whether the recorded process still runs: None when it ran on another host (unknowable)."""
    if process.get("host") != socket.gethostname():
        return None
    pid = int(process.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with that id: alive
        pass
    except (OSError, ValueError, OverflowError):
        return False
    start = process.get("start")
    return start is None or process_start(pid) in (None, start)


def run_status(data: dict[str, Any]) -> str:
    """metrics.json's status, with `killed` for a `running` run whose process is gone."""
    status = str(data.get("status", "unknown"))
    process = data.get("process")
    if status == "running" and isinstance(process, dict) and process_alive(process) is False:
        return "killed"
    return status


def config_hash(cfg: DictConfig) -> str:
    return short_hash(OmegaConf.to_container(cfg, resolve=True))


def method_options(cfg: DictConfig, typed: Any = None) -> dict[str, Any]:
    """The method's options as a plain dict: the typed ones the method ran with (per-scenario
    `auto` defaults resolved) when given, else its config node.

    Recorded so that `unlearn report` can tell apart runs of one method with different options
    (a tuning sweep's learning rates) instead of merging them, and name what differs.
    """
    if typed is not None:
        return {"name": cfg.method.name, **dataclasses.asdict(typed)}
    return OmegaConf.to_container(cfg.method, resolve=True)


def variant_label(node: DictConfig, kind: str) -> str:
    """The node's name, with the options that differ from its schema's defaults:
    `animal_mnist[train_limit=2000]`, so reports keep variants of a dataset or model apart.
    Options that only change how data is loaded (not what is learnt) are left out."""
    try:
        from unlearn_cli.data.builders import LOADING_ONLY, dataset_options
        from unlearn_cli.models.builders import model_options

        opts = (dataset_options if kind == "dataset" else model_options)(node)
        given = flatten(dataclasses.asdict(opts))
        default = flatten(dataclasses.asdict(type(opts)()))
    except Exception:  # noqa: BLE001 - a config that does not validate keeps its plain name
        return str(node.get("name"))
    skip = LOADING_ONLY + ("root", "path", "download", "verify_checksums")
    changed = [f"{k}={v}" for k, v in given.items() if v != default.get(k) and k not in skip]
    return f"{node.name}[{','.join(changed)}]" if changed else str(node.name)


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

    def __init__(self, run_dir: Path, cfg: DictConfig, forget_tag: str, method: Any = None) -> None:
        self.path = Path(run_dir) / "metrics.json"
        options = method_options(cfg, method)
        self.data: dict[str, Any] = {
            "status": "running",
            "started_at": now(),
            "process": this_process(),
            "config": {
                "dataset": variant_label(cfg.dataset, "dataset"),
                "model": variant_label(cfg.model, "model"),
                "method": cfg.method.name,
                "forget": forget_tag,
                "seed": cfg.seed,
                "device": str(cfg.device),
                "config_hash": config_hash(cfg),
                "method_options": options,
                "method_hash": short_hash(options),
                "reference": OmegaConf.select(cfg, "evaluation.reference", default="retrain"),
            },
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

    def set_method(self, cfg: DictConfig, method: Any) -> None:
        """Record the options the method ran with, once the run has resolved them anew."""
        options = method_options(cfg, method)
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

    def write(self) -> None:
        atomic_write_json(self.path, self.data, "the run's metrics.json")
