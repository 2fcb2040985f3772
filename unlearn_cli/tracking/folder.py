"""A finished run folder as a tracker sees it: params, tags, scalars (with their steps), files.

Every tracker reads the folder, never the live run: a run sent when it ends and one sent later
by `unlearn sync-tracking` give the tracker the same things, and metrics.json stays the source of
truth.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from unlearn_cli.curves import read_curves
from unlearn_cli.errors import UserError
from unlearn_cli.liveness import run_status

# metrics.json's parts that are not figures (or are sent as params and tags instead).
NOT_SCALARS = {"status", "started_at", "finished_at", "process", "config", "versions", "split",
               "device", "models", "steps", "stream", "error", "original_checkpoint"}  # fmt: skip
# The files a tracker keeps beside the figures (checkpoints only on request).
FILES = ("metrics.json", "metrics.csv", "steps.csv", "curves.csv", "copies.csv", "unlearn.log")
FOLDERS = ("plots", ".hydra")
# Never searched for runs: the model cache, a run's own parts, and trackers' copies of runs.
SKIP = {"cache", "checkpoints", "plots", "tensorboard", "mlartifacts", "mlruns", "export"}
# Our status -> the tracker's (MLflow's RunStatus names).
STATUS = {"completed": "FINISHED", "diverged": "FAILED", "failed": "FAILED",
          "interrupted": "KILLED", "killed": "KILLED"}  # fmt: skip
PARAM_CHARS = 6000  # MLflow's limit on a param's value


@dataclass(frozen=True)
class Scalar:
    name: str
    value: float
    step: int


@dataclass
class RunFolder:
    """What a tracker gets of one run folder."""

    path: Path
    data: dict
    status: str  # ours: completed, diverged, failed, interrupted, killed, running
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    scalars: list[Scalar] = field(default_factory=list)
    sweep: Path | None = None  # the sweep folder of a multirun job
    job: int | None = None

    @property
    def key(self) -> str:
        """Tells this run apart in a tracker, whoever sends it: its folder and start time."""
        started = str(self.data.get("started_at", ""))
        return hashlib.sha256(f"{self.path}|{started}".encode()).hexdigest()[:20]

    @property
    def tracker_status(self) -> str:
        return STATUS.get(self.status, "FAILED")

    @property
    def name(self) -> str:
        return self.path.name

    def start_ms(self) -> int | None:
        return epoch_ms(self.data.get("started_at"))

    def end_ms(self) -> int | None:
        return epoch_ms(self.data.get("finished_at"))

    def files(self, checkpoint: bool = False) -> list[Path]:
        names = [*FILES, *FOLDERS, *(("checkpoints",) if checkpoint else ())]
        return [self.path / n for n in names if (self.path / n).exists()]


def read_run_folder(path: Path) -> RunFolder:
    """The run folder at `path` (one with metrics.json), read for a tracker."""
    path = Path(path).resolve()
    try:
        data = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable run folder (metrics.json: {exc})") from None
    run = RunFolder(path, data, run_status(data))
    hydra = read_yaml(path / ".hydra" / "hydra.yaml").get("hydra", {})
    if hydra.get("mode") == "MULTIRUN" or str(hydra.get("mode", "")).endswith("MULTIRUN"):
        run.sweep = path.parent
        run.job = hydra.get("job", {}).get("num")
    run.params = params_of(path, data)
    run.tags = tags_of(run, read_yaml(path / ".hydra" / "overrides.yaml"))
    run.scalars = scalars_of(data) + curve_scalars(path)
    return run


def read_yaml(path: Path) -> Any:
    """A YAML file Hydra wrote, or {} (plain data only: yaml.safe_load)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def params_of(path: Path, data: dict) -> dict[str, str]:
    """The composed config, flattened (a.b.c -> value): .hydra/config.yaml, else metrics.json's."""
    config = read_yaml(path / ".hydra" / "config.yaml") or data.get("config", {})
    return {k: str(v)[:PARAM_CHARS] for k, v in flatten(config, ".").items()}


def tags_of(run: RunFolder, overrides: Any) -> dict[str, str]:
    config, split = run.data.get("config", {}), run.data.get("split", {})
    tags = {
        "unlearn.key": run.key,
        "unlearn.run_dir": str(run.path),
        "unlearn.status": run.status,
        "dataset": str(config.get("dataset", "")),
        "model": str(config.get("model", "")),
        "method": str(config.get("method", "")),
        "scenario": str(config.get("forget", split.get("tag", ""))),
        "seed": str(config.get("seed", "")),
    }
    if isinstance(overrides, list):
        tags["overrides"] = " ".join(map(str, overrides))[:PARAM_CHARS]
    if run.sweep is not None:
        tags["sweep"] = str(run.sweep)
        tags["job"] = str(run.job)
    if "error" in run.data:
        tags["error"] = str(run.data["error"])[:PARAM_CHARS]
    return tags


def scalars_of(data: dict) -> list[Scalar]:
    """Every figure of metrics.json: `<role>/<metric>` for each model role, the other parts'
    numbers as `<part>/<key>`; a stream's per-step figures with step = the request's number."""
    scalars: list[Scalar] = []
    steps = data.get("steps") or []
    if steps:
        for entry in steps:
            step = int(entry.get("step", 0))
            scalars += numbers(entry.get("models", {}), "", step)
            scalars += numbers(entry.get("cumulative", {}), "cumulative/", step)
            scalars += numbers(entry.get("method_metrics", {}), "method/", step)
    else:
        scalars += numbers(data.get("models", {}), "", 0)
        scalars += numbers(data.get("method_metrics", {}), "method/", 0)
    for part, value in data.items():
        if part not in NOT_SCALARS and part != "method_metrics" and isinstance(value, dict):
            scalars += numbers(value, f"{part}/", 0)
    return scalars


def numbers(node: Any, prefix: str, step: int) -> list[Scalar]:
    """The finite numbers of a nested dict, named by their path (booleans as 0/1)."""
    return [Scalar(metric_name(prefix + k), float(v), step)
            for k, v in flatten(node, "/").items()
            if isinstance(v, int | float) and math.isfinite(float(v))]  # fmt: skip


def curve_scalars(path: Path) -> list[Scalar]:
    """curves.csv as `curves/<model>/<loop>/<value>`, step = the epoch or step."""
    table = read_curves(path)
    scalars = []
    values = [c for c in table.columns if c not in ("model", "loop", "step")]
    for row in table.itertuples(index=False):
        for column in values:
            value = getattr(row, column)
            if isinstance(value, int | float) and math.isfinite(float(value)):
                name = metric_name(f"curves/{row.model}/{row.loop}/{column}")
                scalars.append(Scalar(name, float(value), int(row.step)))
    return scalars


def flatten(node: Any, sep: str, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, sep, name))
        elif isinstance(value, list) and len(value) > 50:  # ids of a request: not a param
            flat[name] = f"[{len(value)} items]"
        else:
            flat[name] = value
    return flat


def metric_name(name: str) -> str:
    """Only the characters MLflow accepts in a metric's name."""
    return re.sub(r"[^\w\-./ :]", "_", name)


def epoch_ms(stamp: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(stamp)).timestamp() * 1000)
    except ValueError:
        return None


def walk(root: Path) -> Iterator[tuple[Path, str]]:
    """(folder, "run" | "audit") for every run folder (metrics.json) and audit (audit.json) at
    or under `root`, without descending into one, the model cache or a tracker's own copies."""
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                names = {e.name: e for e in entries}
        except OSError:
            continue
        if "metrics.json" in names:
            yield folder, "run"
        elif "audit.json" in names:
            yield folder, "audit"
        else:
            stack += sorted((Path(e.path) for n, e in names.items()
                             if n not in SKIP and not n.startswith(".") and e.is_dir()),
                            reverse=True)  # fmt: skip


def run_folders(root: Path) -> list[Path]:
    """The run folders at or under `root`."""
    return [folder for folder, kind in walk(root) if kind == "run"]
