"""Epoch checkpoints of a training loop: everything the next epoch depends on, so that a rerun
after a kill or a preemption resumes from the last completed epoch and ends with the same weights
as an uninterrupted run (exactly, on the CPU).

A checkpoint holds the weights (with batch-norm buffers), the optimiser and scheduler states, the
loop's own generators (data order, augmentation) and the global RNG states of torch (and CUDA),
numpy and Python. There is no AMP gradient scaler to save: autocast runs in bf16, which needs
none. The file is written with `torch.save` (atomically) and read with `weights_only=True`;
it carries a fingerprint of the job (training config, seed, rows, model shapes), and one that
does not match the job at hand is ignored, never loaded into it.

It also carries the training's cost so far (counted sample passes and wall seconds, those of
earlier resumes included): a resumed training adds them to the open counters
(`cost.add_resumed`), so it reports what the whole training cost, not only the epochs after the
resume. The part of an epoch lost to the kill is in neither: a resumed training reports the same
counts as an uninterrupted one. A checkpoint of an older version, without these figures, still
resumes; its earlier epochs are then missing from the cost (one warning).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from unlearn_cli.atomic import atomic_write_bytes, torch_save_bytes
from unlearn_cli.cost import Cost, add_resumed
from unlearn_cli.errors import WriteFailed
from unlearn_cli.fingerprint import short_hash

log = logging.getLogger(__name__)


@dataclass
class EpochCheckpoint:
    """Where one training loop keeps its resume state, and how often (every `every` epochs)."""

    path: Path
    every: int
    job: str = ""  # the fingerprint of what is trained; set by the loop
    failed: bool = False  # a write failed once: warned, no further tries
    # The loop's own counter (resumed work included) and when this process's part of it began:
    # the cost so far that each checkpoint carries. Set by the loop.
    spent: Cost = field(default_factory=Cost)
    started: float = field(default_factory=time.perf_counter)


_warned_costless = False  # a checkpoint without cost figures is warned about once per process


def job_fingerprint(cfg, seed: int, rows: np.ndarray | None, n: int, model: nn.Module) -> str:
    """What determines the loop's result besides the data (which the cache entry's key holds)."""
    config = {k: v for k, v in asdict(cfg).items() if k != "checkpoint_every"}
    rows_hash = "all" if rows is None else hashlib.sha256(
        np.ascontiguousarray(rows, dtype=np.int64).tobytes()
    ).hexdigest()  # fmt: skip
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    return short_hash({"config": config, "seed": seed, "rows": rows_hash, "n": n,
                       "shapes": shapes})  # fmt: skip


def rng_state(device: torch.device) -> dict:
    keys = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [keys[0], torch.from_numpy(np.asarray(keys[1], dtype=np.int64)), *keys[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def save_epoch(
    ckpt: EpochCheckpoint,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    generators: dict[str, torch.Generator],
    device: torch.device,
) -> None:
    """Checkpoint after `epoch` completed epochs. A failed write is one warning, not the end of
    the training: the loop goes on without checkpoints."""
    if ckpt.failed:
        return
    state = {
        "job": ckpt.job,
        "epoch": epoch,
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "generators": {name: g.get_state() for name, g in generators.items()},
        "rng": rng_state(device),
        "cost": {
            "grad_samples": ckpt.spent.grad_samples,
            "forward_samples": ckpt.spent.forward_samples,
            "seconds": ckpt.spent.resumed_seconds + time.perf_counter() - ckpt.started,
        },
    }
    try:
        atomic_write_bytes(ckpt.path, torch_save_bytes(state), "an epoch checkpoint")
    except WriteFailed as exc:
        ckpt.failed = True
        log.warning("%s; training goes on without epoch checkpoints", exc)


def resume_epoch(
    ckpt: EpochCheckpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    generators: dict[str, torch.Generator],
    device: torch.device,
) -> int:
    """Load the checkpoint into the loop's objects; return the epochs it had completed (0 when
    there is none, or one of another job, or one that cannot be read)."""
    if not ckpt.path.is_file():
        return 0
    backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        state = torch.load(ckpt.path, map_location="cpu", weights_only=True)
        if state.get("job") != ckpt.job:
            log.warning("ignoring the epoch checkpoint %s: it was written for other training "
                        "settings", ckpt.path)  # fmt: skip
            return 0
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        for name, generator in generators.items():
            generator.set_state(state["generators"][name])
        set_rng_state(state["rng"], device)
        carried = carried_cost(state)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint only costs the epochs it held
        model.load_state_dict(backup)
        log.warning("ignoring the unreadable epoch checkpoint %s (%s)", ckpt.path,
                    type(exc).__name__)  # fmt: skip
        return 0
    done = int(state["epoch"])
    if carried is not None:
        add_resumed(*carried)
    else:
        warn_costless(ckpt.path, done)
    return done


def carried_cost(state: dict) -> tuple[int, int, float] | None:
    """The (grad samples, forward samples, wall seconds) a checkpoint carries; None for one of
    a version that did not record them."""
    cost = state.get("cost")
    if cost is None:
        return None
    return int(cost["grad_samples"]), int(cost["forward_samples"]), float(cost["seconds"])


def warn_costless(path: Path, done: int) -> None:
    global _warned_costless
    say = log.debug if _warned_costless else log.warning
    _warned_costless = True
    say("the epoch checkpoint %s is of an older version without cost figures: the %d epochs "
        "before the resume are missing from this training's cost_units and time_s", path,
        done)  # fmt: skip
