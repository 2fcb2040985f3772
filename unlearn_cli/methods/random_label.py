"""random_label: train forget samples towards random wrong labels, interleaved with retain batches.

Each step takes one forget batch, relabelled with a uniformly random class other than its own,
and one retain batch with true labels: loss = CE(forget, random wrong) + CE(retain, true).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.methods.base import METHODS, UnlearnContext
from unlearn_cli.methods.common import forget_and_retain_batches, start_finetuning
from unlearn_cli.methods.finetuning import finetune_loop, steps_for


def random_wrong_labels(y: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    shift = torch.randint(1, num_classes, y.shape, generator=gen).to(y.device)
    return (y + shift) % num_classes


def random_label_loss(model: nn.Module, split: ForgetSplit, ctx: UnlearnContext):
    """The per-step loss of random-label unlearning (also SalUn's update rule)."""
    gen = torch.Generator().manual_seed(ctx.seed)
    forget, retain = forget_and_retain_batches(split, ctx.device, ctx.cfg.batch_size, gen)
    k = split.data.num_classes

    def loss(step: int) -> torch.Tensor:
        xf, yf = next(forget)
        xr, yr = next(retain)
        wrong = random_wrong_labels(yf, k, gen)
        return F.cross_entropy(model(xf), wrong) + ctx.cfg.retain_weight * F.cross_entropy(
            model(xr), yr
        )

    return loss


@METHODS.register("random_label")
def random_label(model: nn.Module, split: ForgetSplit, ctx: UnlearnContext) -> nn.Module:
    start_finetuning(model, ctx)
    loss = random_label_loss(model, split, ctx)
    return finetune_loop(model, split, ctx, steps_for(split, ctx.cfg), loss, "random_label")
