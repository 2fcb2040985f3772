"""l1_sparse: fine-tune on the retain set with an L1 penalty that decays linearly to zero.

Jia et al. (NeurIPS 2023, "Model sparsity can simplify machine unlearning"):
loss = CE(retain) + gamma_t * ||theta||_1 with gamma_t = gamma * (1 - t / T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.methods.base import METHODS, UnlearnContext
from unlearn_cli.methods.common import forget_and_retain_batches, start_finetuning
from unlearn_cli.methods.finetuning import finetune_loop, steps_for


@METHODS.register("l1_sparse")
def l1_sparse(model: nn.Module, split: ForgetSplit, ctx: UnlearnContext) -> nn.Module:
    start_finetuning(model, ctx)
    gen = torch.Generator().manual_seed(ctx.seed)
    _, retain = forget_and_retain_batches(split, ctx.device, ctx.cfg.batch_size, gen)
    total = steps_for(split, ctx.cfg, over="retain")

    def loss(step: int) -> torch.Tensor:
        x, y = next(retain)
        gamma = ctx.cfg.l1_gamma * (1.0 - step / total)
        l1 = sum(p.abs().sum() for p in model.parameters())
        return F.cross_entropy(model(x), y) + gamma * l1

    return finetune_loop(model, split, ctx, total, loss, "l1_sparse")
