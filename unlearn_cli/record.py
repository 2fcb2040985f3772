"""metrics.json of a run: written at the start (status running) and rewritten when it ends."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import unlearn_cli
from unlearn_cli.atomic import atomic_write_json


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def config_hash(cfg: DictConfig) -> str:
    blob = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class RunRecord:
    """The run's metrics.json; every update rewrites it atomically."""

    def __init__(self, run_dir: Path, cfg: DictConfig, forget_tag: str) -> None:
        self.path = Path(run_dir) / "metrics.json"
        self.data: dict[str, Any] = {
            "status": "running",
            "started_at": now(),
            "config": {
                "dataset": cfg.dataset.name,
                "model": cfg.model.name,
                "method": cfg.method.name,
                "forget": forget_tag,
                "seed": cfg.seed,
                "device": str(cfg.device),
                "config_hash": config_hash(cfg),
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

    def finish(self, status: str, **fields: Any) -> None:
        self.update(status=status, finished_at=now(), **fields)

    def write(self) -> None:
        atomic_write_json(self.path, self.data)
