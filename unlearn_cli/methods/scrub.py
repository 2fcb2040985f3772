"""scrub: SCRUB (Kurmanji et al., NeurIPS 2023), a student that moves away from its teacher.

The student starts as the trained model, the teacher is a frozen copy. Each epoch, during the
first `msteps` epochs, a max-step pass over the forget set *raises* KL(teacher || student) there;
then a min-step pass over retain batches lowers alpha * KL + gamma * CE, keeping what should stay.
KL uses softened outputs (temperature T). With `rewind` (SCRUB+R), the epoch whose forget
accuracy is closest to the forget target (what a retrained model shows) is kept.
"""

from __future__ import annotations

import copy
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
from unlearn_cli.methods.finetuning import clone_frozen
from unlearn_cli.training import make_optimizer


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float):
    """KL(teacher || student) on temperature-softened outputs, scaled by t^2 as in distillation."""
    return (
        F.kl_div(
            F.log_softmax(student_logits / t, dim=1),
            F.softmax(teacher_logits / t, dim=1),
            reduction="batchmean",
        )
        * t * t
    )  # fmt: skip


def epoch_plan(split: ForgetSplit, cfg) -> list[list[str]]:
    forget_steps = math.ceil(len(split.forget_idx) / cfg.batch_size)
    retain_steps = cfg.retain_steps or math.ceil(len(split.retain_idx) / cfg.batch_size)
    return [
        ["max"] * (forget_steps if epoch < cfg.msteps else 0) + ["min"] * retain_steps
        for epoch in range(cfg.epochs)
    ]


@METHODS.register("scrub")
def scrub(model: nn.Module, split: ForgetSplit, ctx: UnlearnContext) -> nn.Module:
    cfg, device = ctx.cfg, ctx.device
    start_finetuning(model, ctx)
    teacher = clone_frozen(model)
    forget, retain = forget_and_retain_batches(
        split, device, cfg.batch_size, torch.Generator().manual_seed(ctx.seed)
    )
    optimizer = make_optimizer(
        model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum
    )
    plan = epoch_plan(split, cfg)
    target = forget_target(model, split, device, "auto")
    guard, kept, history = DivergenceGuard(model), None, []
    with progress_bar("scrub", total=sum(map(len, plan))) as bar:
        for epoch, steps in enumerate(plan):
            for kind in steps:
                if kind == "max":
                    x, _ = next(forget)
                    loss = -distill_kl(model(x), teacher(x), cfg.temperature)
                else:
                    x, y = next(retain)
                    out = model(x)
                    loss = cfg.alpha * distill_kl(out, teacher(x), cfg.temperature) + (
                        cfg.gamma * F.cross_entropy(out, y)
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                if not guard.check(loss):
                    break
                guard.commit()
                bar.advance(status=f"epoch {epoch + 1} {kind} {loss.item():.4f}")
            if guard.diverged:
                break
            acc = forget_accuracy(model, split, device)
            history.append(acc)
            if cfg.rewind and (kept is None or abs(acc - target) < abs(kept[1] - target)):
                kept = (copy.deepcopy(model.state_dict()), acc, epoch)
    if cfg.rewind and kept is not None:
        model.load_state_dict(kept[0])
        ctx.metrics["rewound_to_epoch"] = kept[2] + 1
    ctx.metrics.update(forget_acc_by_epoch=history, diverged=guard.diverged)
    return model.eval()
