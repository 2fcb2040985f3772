"""The shared model cache: original and retrained models keyed by everything that determines them.

Entries live in `<cache_dir>/models/<kind>-<hash>/` as `model.safetensors` + `model.json` (the key
parts, the weights' sha256 and the training time). An entry is built in a temp folder and renamed
into place, so a half-written entry is never visible; the sha256 is checked on every load.

Parallel sweep jobs share the cache: a miss takes a file lock per entry
(`.locks/<kind>-<hash>.lock`), so exactly one process trains a model while the others wait for it
and then load it.

Training resumes after a kill: `make(staging)` gets the entry's staging folder
(`.staging/<kind>-<hash>/`) for its epoch checkpoints, which outlive a killed process and are
removed once the entry is stored. A team can share the cache: entries are created under the
user's umask, and a stored entry is only ever read, so a user without write access to another's
entries still uses them. A model that was trained but could not be stored (disk full, read-only
cache) is still returned, with one warning: hours of training are not lost to a cache write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from torch import nn

from unlearn_cli.atomic import make_folder, temp_folder, write_failed
from unlearn_cli.cost import Cost, counting
from unlearn_cli.curves import recording, replay
from unlearn_cli.errors import UserError, WriteFailed
from unlearn_cli.models.checkpoint import (
    file_sha256,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from unlearn_cli.registry import Choice

log = logging.getLogger(__name__)

# Bump when training code changes in a way that makes old entries wrong.
CACHE_VERSION = 2  # 2: a validation split is held out of training


def cache_key(parts: dict) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def model_key(model: Choice) -> dict:
    """The model config as it enters cache keys, with the content hash of `model.weights`:
    another file at the same path must not reuse models trained from the old one. Options that
    do not change the trained weights (`train.checkpoint_every`) are left out."""
    key = model.plain()
    # How often a loop saves its resume state does not change what it trains.
    key.get("train", {}).pop("checkpoint_every", None)
    weights = key.get("weights")
    if weights:
        key["weights_sha256"] = file_sha256(Path(weights).expanduser())
    return key


@dataclass
class CachedModel:
    model: nn.Module
    train_seconds: float
    hit: bool
    path: Path | None  # None: trained, but it could not be stored
    cost: Cost  # the sample passes that producing the model took (counted when it was made)


class ModelCache:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root) / "models"

    def entry_dir(self, kind: str, parts: dict) -> Path:
        return self.root / f"{kind}-{cache_key(parts)}"

    def staging_dir(self, name: str) -> Path:
        """Where the work towards an entry (or a method's run, e.g. SISA's shards) keeps its
        epoch checkpoints between a kill and the rerun."""
        return self.root / ".staging" / name

    def get_or_train(
        self,
        kind: str,
        parts: dict,
        fresh_model: Callable[[], nn.Module],
        make: Callable[[Path], nn.Module],
    ) -> CachedModel:
        """Load the entry for (kind, parts) into `fresh_model()`, or build it with
        `make(staging_folder)` and store it.

        The wall-clock seconds and the counted sample passes of `make` are stored with the entry,
        so a cache hit still reports what producing the model cost.
        """
        entry = self.entry_dir(kind, parts)
        cached = self._load(kind, entry, fresh_model)
        if cached is not None:
            return cached
        lock = self._lock(entry)
        try:
            cached = self._load(kind, entry, fresh_model)  # another process may have trained it
            if cached is not None:
                return cached
            log.info("cache miss: training the %s model (entry %s)", kind, entry.name)
            staging = self.staging_dir(entry.name)
            start = time.perf_counter()
            with counting() as cost, recording(kind, loop="train") as curves:
                model = make(staging)
            # A training resumed from staging's checkpoints carries the killed runs' seconds.
            seconds = time.perf_counter() - start + cost.resumed_seconds
            stored = self._store(entry, model, {"kind": kind, "parts": parts,
                                                "train_seconds": seconds,
                                                "cost": cost.as_dict(),
                                                "curves": curves.rows})  # fmt: skip
            if stored:
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            if lock is not None:
                lock.release()
        return CachedModel(model, seconds, False, entry if stored else None, cost)

    def _lock(self, entry: Path) -> FileLock | None:
        """The entry's lock, held; None when the cache is not writable (train without it)."""
        try:
            locks = make_folder(self.root / ".locks", "the model cache's lock files")
            lock = FileLock(locks / f"{entry.name}.lock")  # released by the OS if its holder dies
            try:
                lock.acquire(timeout=0)
            except Timeout:
                log.info("another process is training the model of %s; waiting", entry.name)
                lock.acquire()
        except (WriteFailed, OSError) as exc:
            log.warning("cannot lock the model cache (%s); training without the lock",
                        exc if isinstance(exc, WriteFailed) else exc.strerror)  # fmt: skip
            return None
        return lock

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
        replay(meta.get("curves", []), kind)  # entries stored before curves were kept have none
        counts = meta.get("cost", {})
        cost = Cost(int(counts.get("grad_samples", 0)), int(counts.get("forward_samples", 0)))
        return CachedModel(model, float(meta["train_seconds"]), True, entry, cost)

    def _store(self, entry: Path, model: nn.Module, metadata: dict) -> bool:
        """Store the entry; False (after one warning line) when it cannot be written."""
        tmp: Path | None = None
        try:
            tmp = temp_folder(self.root, f".{entry.name}.", "the model cache entry")
            save_checkpoint(model, tmp / "model.safetensors", metadata, "the model cache entry")
            try:
                os.rename(tmp, entry)
            except OSError as exc:  # another process stored the same entry first: keep theirs
                if not (entry / "model.safetensors").is_file():
                    raise write_failed(exc, entry, "the model cache entry") from exc
                log.info("cache entry %s appeared meanwhile; keeping the existing one", entry.name)
        except WriteFailed as exc:
            log.warning("%s; the model is used for this run but not cached", exc)
            return False
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        return True
