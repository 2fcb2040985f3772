"""The optimizer-step loop that the fine-tuning methods share (not a method itself).

`finetune`, `random_label`, `l1_sparse`, `salun` and `boundary_shrink` each supply
`batch_loss(step) -> loss`; `step_loop` owns the optimizer and its cosine schedule, gradient
clipping, the optional EWC penalty (`ewc_lambda`), an optional gradient mask (weights outside it
stay bit-identical), optional per-weight gradient scales (msg) and the divergence guard. The
schedule is cosine annealing, a linear warm-up then linear decay to 0 (msg), or a constant
learning rate (ngplus).
`StepLoopOptions` declares the options they share. `retain_finetune` is the loop's most common
use, cross-entropy on the retain set for `retain_epochs` passes (finetune, l1_sparse, msg,
conv_transpose).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli.console import progress_bar
from unlearn_cli.curves import record
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.methods.base import UnlearnContext
from unlearn_cli.methods.common import DivergenceGuard, retain_batches, to_train_mode
from unlearn_cli.methods.importance import diagonal_fisher, subsample
from unlearn_cli.options import Count, Momentum, NonNegative, Optimizer, Options, Positive, opt
from unlearn_cli.training import make_optimizer, make_scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepLoopOptions(Options):
    """Options of every method that runs the shared step loop."""

    batch_size: Count = opt(64, "mini-batch size (forget and retain batches)")
    lr: Positive = opt(0.01, "learning rate (cosine-annealed to 0 over the run)")
    optimizer: Optimizer = opt("sgd", "sgd | adam | adamw")
    momentum: Momentum = opt(0.9, "SGD momentum")
    weight_decay: NonNegative = opt(0.0005, "weight decay")
    grad_clip: NonNegative = opt(5.0, "max gradient norm; 0 turns clipping off")
    freeze_norm: bool = opt(True, "keep the original model's batch-norm statistics")
    ewc_lambda: NonNegative = opt(0.0, "> 0 adds an EWC penalty protecting retain knowledge")
    ewc_samples: Count = opt(1000, "retain samples for the EWC penalty's diagonal Fisher")

    def uses_torch_func(self) -> bool:
        return self.ewc_lambda > 0  # the penalty's per-sample Fisher


class EwcPenalty:
    """Elastic Weight Consolidation (Kirkpatrick et al. 2017): (lambda/2) sum F_i (w_i - w*_i)^2.

    F is the diagonal Fisher of the retain loss at the original weights w*: moving a weight that
    the retained knowledge depends on costs in proportion to how much it depends on it.
    """

    def __init__(
        self, model: nn.Module, split: ForgetSplit, ctx: UnlearnContext, opts: StepLoopOptions
    ) -> None:
        x, y = subsample(
            split.data.x_train, split.data.y_train, opts.ewc_samples, ctx.seed, split.retain_idx
        )
        self.fisher = diagonal_fisher(model, x, y, ctx.device)
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.strength = float(opts.ewc_lambda)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        total = sum(
            (self.fisher[n] * (p - self.anchor[n]).pow(2)).sum()
            for n, p in model.named_parameters()
            if n in self.fisher
        )
        return 0.5 * self.strength * total


def steps_for(split: ForgetSplit, epochs: int, batch_size: int, over: str = "forget") -> int:
    """`epochs` passes over the forget (or retain) set, in batches of `batch_size`."""
    n = len(split.forget_idx) if over == "forget" else len(split.retain_idx)
    return max(1, int(epochs) * math.ceil(n / batch_size))


def prepare(model: nn.Module, ctx: UnlearnContext, opts: StepLoopOptions) -> None:
    """The model on the run's device in train mode (batch norm frozen if the options say so)."""
    to_train_mode(model, ctx.device, opts.freeze_norm)


def step_loop(
    model: nn.Module,
    split: ForgetSplit,
    ctx: UnlearnContext,
    opts: StepLoopOptions,
    total_steps: int,
    batch_loss: Callable[[int], torch.Tensor],
    description: str,
    mask: dict[str, torch.Tensor] | None = None,
    grad_scale: dict[str, torch.Tensor] | None = None,
    warmup_steps: int | None = None,
    constant_lr: bool = False,
) -> nn.Module:
    """Run `total_steps` optimizer steps on `batch_loss(step)`; record steps and divergence.

    `grad_scale`: parameter name -> a tensor multiplying its gradient before each step.
    `warmup_steps`: None for the cosine schedule; else the lr rises linearly over that many
    steps, then falls linearly to 0 at the last step. `constant_lr`: no schedule at all."""
    optimizer = make_optimizer(
        model.parameters(), opts.optimizer, opts.lr, opts.weight_decay, opts.momentum
    )
    if constant_lr:
        schedule = make_scheduler(optimizer, "constant", opts.lr, total_steps)
    else:
        schedule = lr_schedule(optimizer, total_steps, warmup_steps)
    ewc = EwcPenalty(model, split, ctx, opts) if opts.ewc_lambda else None
    frozen = None
    if mask is not None:  # copies of the weights that must not move
        frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    guard, steps = DivergenceGuard(model), 0
    with progress_bar(description, total=total_steps) as bar:
        for step in range(total_steps):
            loss = batch_loss(step)
            if ewc is not None:
                loss = loss + ewc(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_scale is not None:
                scale_gradients(model, grad_scale)
            if opts.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
            optimizer.step()
            schedule.step()
            if frozen is not None:
                restore_outside_mask(model, mask, frozen)
            steps += 1
            if not guard.check(loss):
                break
            guard.commit()
            record(description, step + 1, loss=loss.item())
            bar.advance(status=f"loss {loss.item():.4f}")
    ctx.metrics.update(steps=steps, diverged=guard.diverged)
    if ewc is not None:
        ctx.metrics["ewc_lambda"] = ewc.strength
    return model.eval()


def retain_finetune(
    model: nn.Module,
    split: ForgetSplit,
    ctx: UnlearnContext,
    opts: StepLoopOptions,
    description: str,
    before: Callable[[], dict[str, torch.Tensor] | None] | None = None,
    penalty: Callable[[int, int], torch.Tensor] | None = None,
    warmup_fraction: float | None = None,
) -> nn.Module:
    """Fine-tune on the retain set: cross-entropy on shuffled retain batches (a generator seeded
    with ctx.seed) for `opts.retain_epochs` passes (each caller's schema declares its own),
    through `step_loop`.

    `before()` runs once the model is prepared, before the first batch (msg re-initialises
    weights, conv_transpose transposes kernels); it may return per-weight gradient scales for
    the loop. `penalty(step, total_steps)` is added to every batch's loss (l1_sparse's decaying
    L1). `warmup_fraction`: the lr warms up over that share of the steps, then decays linearly,
    instead of the cosine schedule."""
    prepare(model, ctx, opts)
    grad_scale = before() if before is not None else None
    retain = retain_batches(
        split, ctx.device, opts.batch_size, torch.Generator().manual_seed(ctx.seed)
    )
    total = steps_for(split, opts.retain_epochs, opts.batch_size, over="retain")

    def loss(step: int) -> torch.Tensor:
        x, y = next(retain)
        if penalty is None:
            return F.cross_entropy(model(x), y)
        # The penalty before the forward pass, as l1_sparse always had it: the graph's order is
        # the order autograd sums a weight's gradients in, and float sums depend on it.
        extra = penalty(step, total)
        return F.cross_entropy(model(x), y) + extra

    warmup = None if warmup_fraction is None else int(round(warmup_fraction * total))
    return step_loop(model, split, ctx, opts, total, loss, description, grad_scale=grad_scale,
                     warmup_steps=warmup)  # fmt: skip


def lr_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int | None
) -> torch.optim.lr_scheduler.LRScheduler:
    total = max(1, total_steps)
    if warmup_steps is None:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    warm = min(max(0, warmup_steps), total - 1)

    def factor(step: int) -> float:  # the lr of step `step` (0-based) over the base lr
        if step < warm:
            return (step + 1) / (warm + 1)
        return max(0.0, (total - step) / (total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def scale_gradients(model: nn.Module, scale: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        if p.grad is not None and name in scale:
            p.grad.mul_(scale[name])


@torch.no_grad()
def restore_outside_mask(
    model: nn.Module, mask: dict[str, torch.Tensor], frozen: dict[str, torch.Tensor]
) -> None:
    """Weights where mask is False go back to their saved values, bit for bit."""
    for name, p in model.named_parameters():
        if name in mask:  # weights outside every mask (a frozen backbone) never move
            p.copy_(torch.where(mask[name], p, frozen[name]))


def clone_frozen(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval().requires_grad_(False)
