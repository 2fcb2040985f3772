"""The shared model cache: original and retrained models keyed by everything that determines them.

Entries live in `<cache_dir>/models/<kind>-<hash>/` as `model.safetensors` + `model.json` (the key
parts, the weights' sha256 and the training time). An entry is built in a temp folder and renamed
into place, so a half-written entry is never visible; the sha256 is checked on every load.

Parallel sweep jobs share the cache: a miss takes a file lock per entry
(`.locks/<kind>-<hash>.lock`), so exactly one process trains a model while the others wait for it
and then load it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from torch import nn

from unlearn_cli.cost import Cost, counting
from unlearn_cli.errors import UserError
from unlearn_cli.models.checkpoint import load_checkpoint, read_metadata, save_checkpoint

log = logging.getLogger(__name__)

# Bump when training code changes in a way that makes old entries wrong.
CACHE_VERSION = 2  # 2: a validation split is held out of training


def cache_key(parts: dict) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class CachedModel:
    model: nn.Module
    train_seconds: float
    hit: bool
    path: Path
    cost: Cost  # the sample passes that producing the model took (counted when it was made)


class ModelCache:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root) / "models"

    def entry_dir(self, kind: str, parts: dict) -> Path:
        return self.root / f"{kind}-{cache_key(parts)}"

    def get_or_train(
        self,
        kind: str,
        parts: dict,
        fresh_model: Callable[[], nn.Module],
        make: Callable[[], nn.Module],
    ) -> CachedModel:
        """Load the entry for (kind, parts) into `fresh_model()`, or build it with `make`, store it.

        The wall-clock seconds and the counted sample passes of `make` are stored with the entry,
        so a cache hit still reports what producing the model cost.
        """
        entry = self.entry_dir(kind, parts)
        cached = self._load(kind, entry, fresh_model)
        if cached is not None:
            return cached
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        lock = FileLock(locks / f"{entry.name}.lock")  # released by the OS if its holder dies
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("another process is training the %s model (%s); waiting", kind, entry.name)
            lock.acquire()
        try:
            cached = self._load(kind, entry, fresh_model)  # another process may have trained it
            if cached is not None:
                return cached
            log.info("cache miss: training the %s model (entry %s)", kind, entry.name)
            start = time.perf_counter()
            with counting() as cost:
                model = make()
            seconds = time.perf_counter() - start
            self._store(entry, model, {"kind": kind, "parts": parts, "train_seconds": seconds,
                                       "cost": cost.as_dict()})  # fmt: skip
        finally:
            lock.release()
        return CachedModel(model, seconds, False, entry, cost)

    def _load(self, kind: str, entry: Path, fresh_model) -> CachedModel | None:
        """The stored model, or None when there is no entry (an unusable one is removed)."""
        weights = entry / "model.safetensors"
        if not weights.is_file():
            return None
        try:
            meta = read_metadata(weights)
            model = load_checkpoint(fresh_model(), weights, sha256=meta["sha256"])
        except (UserError, OSError, KeyError, ValueError) as exc:
            log.warning("cache entry %s is unusable (%s); retraining", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        log.info("cache hit: %s model from %s", kind, entry)
        counts = meta.get("cost", {})
        cost = Cost(int(counts.get("grad_samples", 0)), int(counts.get("forward_samples", 0)))
        return CachedModel(model, float(meta["train_seconds"]), True, entry, cost)

    def _store(self, entry: Path, model: nn.Module, metadata: dict) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=self.root))
        try:
            save_checkpoint(model, tmp / "model.safetensors", metadata)
            try:
                os.rename(tmp, entry)
            except OSError:  # another process stored the same entry first: keep theirs
                log.info("cache entry %s appeared meanwhile; keeping the existing one", entry.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
