"""negative_gradient: gradient ascent on the forget loss, optionally anchored on retain data.

loss = retain_weight * CE(retain batch) - (1 - retain_weight) * CE(forget batch). With
retain_weight = 0 this is plain gradient ascent; about 0.95 is the NegGrad+ variant. Ascent has no
natural end, so it stops once forget accuracy reaches what a retrained model would show (see
`forget_target`), after `epochs` passes over the forget set (or `max_steps` steps) at the latest,
or when a loss or weight stops being finite (the last good weights are restored).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli.console import progress_bar
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.methods.base import METHODS, UnlearnContext
from unlearn_cli.methods.common import (
    DivergenceGuard,
    forget_accuracy,
    forget_and_retain_batches,
    forget_target,
    start_finetuning,
)
from unlearn_cli.training import make_optimizer

log = logging.getLogger(__name__)


@METHODS.register("negative_gradient")
def negative_gradient(model: nn.Module, split: ForgetSplit, ctx: UnlearnContext) -> nn.Module:
    cfg, device = ctx.cfg, ctx.device
    start_finetuning(model, ctx)
    generator = torch.Generator().manual_seed(ctx.seed)
    forget_batches, retain_batches = forget_and_retain_batches(
        split, device, cfg.batch_size, generator
    )
    optimizer = make_optimizer(
        model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum
    )
    target = forget_target(model, split, device, cfg.stop_target)
    total_steps = cfg.max_steps or cfg.epochs * math.ceil(len(split.forget_idx) / cfg.batch_size)
    guard, w = DivergenceGuard(model), float(cfg.retain_weight)
    acc, steps, reason = forget_accuracy(model, split, device), 0, "step_budget"
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
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            steps += 1
            if not guard.check(loss):
                reason = "diverged"
                break
            if steps % cfg.check_every == 0 or steps == total_steps:
                guard.commit()
                acc = forget_accuracy(model, split, device)
            bar.advance(status=f"forget acc {acc:.1f}% (target {target:.1f}%)")
    model.eval()
    log.info(
        "negative_gradient stopped after %d steps: %s (forget acc %.2f%%, target %.2f%%)",
        steps,
        reason,
        forget_accuracy(model, split, device),
        target,
    )
    ctx.metrics.update(
        stop_reason=reason, steps=steps, forget_target=target, diverged=guard.diverged
    )
    return model
