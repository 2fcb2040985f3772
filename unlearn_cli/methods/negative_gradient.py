"""negative_gradient: gradient ascent on the forget loss, optionally anchored on retain data.

loss = mix * CE(retain batch) - (1 - mix) * CE(forget batch), a convex mix. With mix = 0 this is
plain gradient ascent; about 0.95 is the NegGrad+ variant. Ascent has no natural end, so it stops
once forget accuracy reaches what a retrained model would show (see `forget_target`), after
`forget_epochs` passes over the forget set (or `max_steps` steps) at the latest,
or when a loss or weight stops being finite (the last good weights are restored).

This is our NG+-style method: its defaults (batch 64, lr 0.001, clipping at 5, a budget in forget
passes, the early stop) were tuned on the benchmark. NG+ as Deep Unlearn publishes it (a fixed
budget of retain passes, lr 0.01, batch 256, no clipping, eval mode) is `ngplus`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli.console import progress_bar
from unlearn_cli.curves import record
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.methods.base import METHODS, UnlearnContext
from unlearn_cli.methods.common import (
    DivergenceGuard,
    forget_accuracy,
    forget_and_retain_batches,
    forget_target,
    to_train_mode,
)
from unlearn_cli.options import (
    Auto,
    Count,
    Momentum,
    NonNegative,
    Optimizer,
    Options,
    Positive,
    Range,
    Share,
    by_targets,
    opt,
)
from unlearn_cli.training import make_optimizer

log = logging.getLogger(__name__)

Percent = Annotated[float, Range(ge=0, le=100)]


@dataclass(frozen=True)
class NegativeGradientOptions(Options):
    renamed = {"epochs": "forget_epochs", "retain_weight": "mix"}
    unsuited = {
        "class": "on the tuning seeds no setting forgets the class and keeps validation and "
        "retain accuracy within 5 points of retrain's (configs/sweep/tune_negative_gradient_"
        "class.yaml): on the full variant every lr of the grid (0.0005, 0.001) costs 6 points "
        "of retain accuracy (RA 92-94 vs retrain's 98.6), and on the memorising one 5 forget "
        "passes cost 7-8 points of validation accuracy on a seed while 2 leave the class",
    }
    unsuited_memorising = (
        "ascent raises the forget loss of memorised samples only by also raising the loss of "
        "unseen data: at its 50 forget passes, lr 0.001 costs a tuning seed 8-13 points of "
        "validation accuracy (UA 5, retrain 9.0) and lr 0.0005 leaves UA 0-0.3 "
        "(configs/sweep/tune_negative_gradient_samples.yaml, val_gap)"
    )
    # From an original that memorises: 50, the best of configs/sweep/
    # tune_negative_gradient_memorised.yaml (avg_gap 7.70 vs 9.19 at 5); it still does not forget.
    forget_epochs: Auto[Count] = by_targets(5, 5, "most passes over the forget set", memorised=50)
    max_steps: Count | None = opt(None, "or at most this many steps (overrides forget_epochs)")
    batch_size: Count = opt(64, "mini-batch size")
    optimizer: Optimizer = opt("sgd", "sgd | adam | adamw")
    lr: Positive = opt(0.001, "learning rate")
    momentum: Momentum = opt(0.9, "SGD momentum")
    weight_decay: NonNegative = opt(0.0, "weight decay")
    grad_clip: NonNegative = opt(5.0, "max gradient norm; 0 turns clipping off")
    # Samples: 0.99, the val_gap pick of configs/sweep/tune_negative_gradient_samples.yaml on the
    # full variant (1.09 vs 1.97 at 0.95); a class is unsuited, and an original that memorises
    # keeps 0.95, the mix its 50 passes were tuned with.
    mix: Auto[Share] = by_targets(
        0.95, 0.99, "loss = mix * CE(retain) - (1 - mix) * CE(forget); 0 = plain ascent", 0.95
    )
    stop_target: Literal["auto", "never"] | Percent = opt(
        "auto", "stop at this forget accuracy (%); auto = what retraining gives; never = budget"
    )
    check_every: Count = opt(1, "steps between forget-accuracy checks")
    freeze_norm: bool = opt(True, "keep the original model's batch-norm statistics")


@METHODS.register("negative_gradient")
def negative_gradient(
    model: nn.Module, split: ForgetSplit, ctx: UnlearnContext, opts: NegativeGradientOptions
) -> nn.Module:
    device = ctx.device
    to_train_mode(model, device, opts.freeze_norm)
    generator = torch.Generator().manual_seed(ctx.seed)
    forget_batches, retain_batches = forget_and_retain_batches(
        split, device, opts.batch_size, generator
    )
    optimizer = make_optimizer(
        model.parameters(), opts.optimizer, opts.lr, opts.weight_decay, opts.momentum
    )
    target = (
        -math.inf
        if opts.stop_target == "never"
        else forget_target(model, split, ctx, opts.stop_target)
    )
    per_epoch = math.ceil(len(split.forget_idx) / opts.batch_size)
    total_steps = opts.max_steps or opts.forget_epochs * per_epoch
    guard, w = DivergenceGuard(model), float(opts.mix)
    acc, steps, reason = forget_accuracy(model, split, ctx), 0, "step_budget"
    with progress_bar("negative_gradient", total=total_steps) as bar:
        while steps < total_steps:
            if acc <= target:
                reason = "target_reached"
                break
            xf, yf = next(forget_batches)
            loss = -(1.0 - w) * F.cross_entropy(model(xf), yf)
            if w > 0:
                xr, yr = next(retain_batches)
                loss = loss + w * F.cross_entropy(model(xr), yr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if opts.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
            optimizer.step()
            steps += 1
            if not guard.check(loss):
                reason = "diverged"
                break
            if steps % opts.check_every == 0 or steps == total_steps:
                guard.commit()
                acc = forget_accuracy(model, split, ctx)
                record("negative_gradient", steps, loss=loss.item(), forget_acc=acc)
            bar.advance(status=f"forget acc {acc:.1f}% (target {target:.1f}%)")
    model.eval()
    log.info(
        "negative_gradient stopped after %d steps: %s (forget acc %.2f%%, target %.2f%%)",
        steps,
        reason,
        forget_accuracy(model, split, ctx),
        target,
    )
    ctx.metrics.update(
        stop_reason=reason, steps=steps, forget_target=target, diverged=guard.diverged
    )
    return model
