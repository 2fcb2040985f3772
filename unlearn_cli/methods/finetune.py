"""finetune: keep training on the retain set only and let catastrophic forgetting do the rest."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.methods.base import METHODS, UnlearnContext
from unlearn_cli.methods.common import forget_and_retain_batches, start_finetuning
from unlearn_cli.methods.finetuning import finetune_loop, steps_for


@METHODS.register("finetune")
def finetune(model: nn.Module, split: ForgetSplit, ctx: UnlearnContext) -> nn.Module:
    start_finetuning(model, ctx)
    gen = torch.Generator().manual_seed(ctx.seed)
    _, retain = forget_and_retain_batches(split, ctx.device, ctx.cfg.batch_size, gen)

    def loss(step: int) -> torch.Tensor:
        x, y = next(retain)
        return F.cross_entropy(model(x), y)

    steps = steps_for(split, ctx.cfg, over="retain")
    return finetune_loop(model, split, ctx, steps, loss, "finetune")
