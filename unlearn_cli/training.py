"""Supervised training: the loop that builds original, retrained, shadow and SISA models.

Methods reuse `make_optimizer` and `make_scheduler` so every loop in the project shares one notion
of the training config; batches come from `data.feed.batch_stream` (in memory or streamed).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli.console import progress_bar
from unlearn_cli.cost import Cost, counting
from unlearn_cli.curves import record
from unlearn_cli.data.feed import IN_MEMORY, TrainingFeed, augment_batch, batch_stream
from unlearn_cli.errors import TrainingDiverged
from unlearn_cli.options import (
    Count,
    Momentum,
    Natural,
    NonNegative,
    Options,
    Positive,
    opt,
    parse,
)
from unlearn_cli.registry import Registry
from unlearn_cli.resume import EpochCheckpoint, job_fingerprint, resume_epoch, save_epoch
from unlearn_cli.speed import autocast, finish_training, prepare_batch, speed_of, training_module

log = logging.getLogger(__name__)

OPTIMIZERS: Registry[type[torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("sgd")(torch.optim.SGD)
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
# Full-batch L-BFGS on CE + (weight_decay/2)||w||^2: reaches the exact optimum of a convex model.
OPTIMIZERS.register("lbfgs")(torch.optim.LBFGS)
SCHEDULES = ("constant", "cosine", "onecycle")
Switch = Literal["auto", True, False]


@dataclass(frozen=True)
class TrainOptions(Options):
    """`model.train`: how the original, retrained, shadow and SISA models are trained."""

    epochs: Count = opt(12, "training epochs (L-BFGS: steps of up to 100 iterations)")
    batch_size: Count = opt(128, "mini-batch size (unused by lbfgs: full batch)")
    optimizer: Literal["sgd", "adam", "adamw", "lbfgs"] = opt("adamw", "sgd | adam | adamw | lbfgs")
    lr: Positive = opt(0.003, "learning rate (the peak of onecycle)")
    momentum: Momentum = opt(0.9, "SGD momentum")
    weight_decay: NonNegative = opt(0.0005, "weight decay (L2 strength for lbfgs)")
    schedule: Literal["constant", "cosine", "onecycle"] = opt("onecycle", "learning-rate schedule")
    amp: Switch = opt("auto", "bf16 autocast: auto = on for CUDA with bf16, off on the CPU")
    channels_last: Switch = opt("auto", "conv nets: auto = on for CUDA")
    compile: bool | str = opt(False, "torch.compile the training forward: false | true | backend")
    checkpoint_every: Natural = opt(
        1, "epochs between resume checkpoints of cached models' training (0 = none)"
    )


def train_options(node: TrainOptions | Mapping) -> TrainOptions:
    """`model.train` as typed options (a plain node, as tests and ad-hoc callers give, is
    parsed against the schema)."""
    return node if isinstance(node, TrainOptions) else parse(TrainOptions, node, "model.train")


def make_optimizer(
    params: Iterable[nn.Parameter], name: str, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    cls = OPTIMIZERS.get(name)
    if cls is torch.optim.SGD:
        return cls(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return cls(params, lr=lr, weight_decay=weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, name: str, lr: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    total_steps = max(1, total_steps)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    raise AssertionError(f"unchecked schedule {name!r}")  # TrainOptions allows no other


@dataclass
class TrainResult:
    seconds: float
    final_loss: float


def train_full_batch_lbfgs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainOptions,
    device,
    description: str,
    ckpt: EpochCheckpoint | None = None,
) -> TrainResult:
    """`epochs` L-BFGS steps (up to 100 iterations each) on the L2-regularised mean loss."""
    spent, start = loop_meter(ckpt)
    model.to(device).train()
    x, y = x.to(device), y.to(device)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=cfg.lr, max_iter=100, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")  # fmt: skip

    last_logits: list[torch.Tensor] = []  # the closure's last forward pass: the step's accuracy

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        l2 = sum(p.pow(2).sum() for p in model.parameters())
        logits = model(x)
        loss = F.cross_entropy(logits, y) + 0.5 * cfg.weight_decay * l2
        loss.backward()
        last_logits[:] = [logits.detach()]
        return loss

    loss = torch.tensor(float("nan"))
    with counting(spent), progress_bar(description, total=cfg.epochs) as bar:
        first = resumed(ckpt, description, cfg.epochs, model, optimizer, None, {}, device)
        bar.advance(first)
        for epoch in range(first, cfg.epochs):
            loss = optimizer.step(closure).detach()
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"L-BFGS on the {description} model diverged in step "
                                       f"{epoch + 1}; raise model.train.weight_decay")  # fmt: skip
            bar.advance(status=f"objective {float(loss):.6f}")
            acc = 100.0 * float((last_logits[0].argmax(1) == y).float().mean())
            record(description, epoch + 1, loss=float(loss), acc=acc)
            checkpointed(ckpt, epoch + 1, cfg.epochs, model, optimizer, None, {}, device)
    model.eval()
    seconds = time.perf_counter() - start + spent.resumed_seconds  # the killed runs' part too
    log.info("%s: L-BFGS in %.2fs, objective %.6f", description, seconds, float(loss))
    return TrainResult(seconds=seconds, final_loss=float(loss))


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainOptions | Mapping,
    device: torch.device,
    seed: int,
    description: str,
    rows: np.ndarray | None = None,
    feed: TrainingFeed = IN_MEMORY,
    checkpoint: Path | None = None,
) -> TrainResult:
    """Train `model` in place with cross-entropy under the training config `cfg`.

    On the `rows` of (x, y) (all if None), fed and augmented as the dataset's `feed` says. With a
    `checkpoint` path (and `checkpoint_every` > 0) the loop saves its state there every
    `checkpoint_every` epochs and first resumes from what is there (see `unlearn_cli.resume`).
    """
    cfg = train_options(cfg)
    n = len(y) if rows is None else len(rows)
    ckpt = None
    if checkpoint is not None and cfg.checkpoint_every > 0:
        ckpt = EpochCheckpoint(Path(checkpoint), cfg.checkpoint_every,
                               job_fingerprint(cfg, seed, rows, n, model))  # fmt: skip
    if cfg.optimizer == "lbfgs":
        if rows is not None:
            x, y = x[torch.as_tensor(rows)], y[torch.as_tensor(rows)]
        return train_full_batch_lbfgs(model, x, y, cfg, device, description, ckpt)
    spent, start = loop_meter(ckpt)
    model.to(device).train()
    speed = speed_of(cfg, model, device)
    net = training_module(model, speed)
    if not feed.stream:  # in memory: select the rows and move them to the device once
        if rows is not None:
            x, y, rows = x[torch.as_tensor(rows)], y[torch.as_tensor(rows)], None
        x, y = x.to(device), y.to(device)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    optimizer = make_optimizer(
        model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum
    )
    scheduler = make_scheduler(optimizer, cfg.schedule, cfg.lr, cfg.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    # Augmentation draws from its own stream: turning it on never changes the batch order.
    augment_generator = torch.Generator().manual_seed(seed + 1)
    loss_value = float("nan")
    generators = {"order": generator, "augment": augment_generator}
    with counting(spent), progress_bar(description, total=cfg.epochs) as bar:
        first = resumed(ckpt, description, cfg.epochs, model, optimizer, scheduler, generators,
                        device)  # fmt: skip
        bar.advance(first)
        for epoch in range(first, cfg.epochs):
            total, count = torch.zeros((), device=device), 0
            correct = torch.zeros((), device=device)
            for xb, yb in batch_stream(x, y, cfg.batch_size, generator, device, feed, rows):
                xb = prepare_batch(augment_batch(xb, feed.augment, augment_generator), speed)
                optimizer.zero_grad(set_to_none=True)
                with autocast(speed, device):
                    logits = net(xb)
                    loss = F.cross_entropy(logits, yb)
                correct += (logits.detach().argmax(1) == yb).sum()
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.detach() * len(yb)  # summed on device: no sync per step
                count += len(yb)
            loss_value = total.item() / max(count, 1)
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"training the {description} model diverged in epoch {epoch + 1} (loss "
                    f"{loss_value}); lower model.train.lr"
                )
            bar.advance(status=f"loss {loss_value:.4f}")
            # The running accuracy over the epoch's batches, as the weights moved.
            record(
                description, epoch + 1, loss=loss_value, acc=100.0 * correct.item() / max(count, 1)
            )
            log.debug("%s epoch %d/%d loss %.4f", description, epoch + 1, cfg.epochs, loss_value)
            checkpointed(ckpt, epoch + 1, cfg.epochs, model, optimizer, scheduler, generators,
                         device)  # fmt: skip
    finish_training(model, speed)
    model.eval()
    seconds = time.perf_counter() - start + spent.resumed_seconds  # the killed runs' part too
    log.info(
        "%s: %d epochs in %.1fs, final loss %.4f", description, cfg.epochs, seconds, loss_value
    )
    return TrainResult(seconds=seconds, final_loss=loss_value)


def loop_meter(ckpt: EpochCheckpoint | None) -> tuple[Cost, float]:
    """The loop's own counter and start time; its checkpoints carry the cost so far (with the
    seconds of earlier, killed runs), and a resume adds that to every open counter."""
    spent, start = Cost(), time.perf_counter()
    if ckpt is not None:
        ckpt.spent, ckpt.started = spent, start
    return spent, start


def resumed(ckpt, description: str, epochs: int, *state) -> int:
    """The epochs already done by an earlier, interrupted run of this loop (restored), or 0."""
    if ckpt is None:
        return 0
    done = min(resume_epoch(ckpt, *state), epochs)
    if done:
        log.info("%s: resuming from epoch %d/%d (checkpoint %s)", description, done, epochs,
                 ckpt.path)  # fmt: skip
    return done


def checkpointed(ckpt, done: int, epochs: int, *state) -> None:
    """Save the loop's state after `done` epochs when it is due (and after the last epoch, so a
    kill between training and caching costs nothing)."""
    if ckpt is not None and (done % ckpt.every == 0 or done == epochs):
        save_epoch(ckpt, done, *state)
