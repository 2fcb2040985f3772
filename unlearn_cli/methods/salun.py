"""salun: saliency-masked random-label unlearning (Fan et al., ICLR 2024).

The weight saliency map is |grad of the forget loss| at the trained weights; the top `saliency`
share of all weights (one global threshold) form the mask. Random-label unlearning then updates
only those weights; every other weight stays exactly as it was (restored bit for bit after each
step, so momentum or weight decay cannot move it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.evaluation.metrics import eval_mode
from unlearn_cli.methods.base import METHODS, UnlearnContext
from unlearn_cli.methods.common import start_finetuning
from unlearn_cli.methods.finetuning import finetune_loop, steps_for
from unlearn_cli.methods.random_label import random_label_loss


def saliency_mask(
    model: nn.Module, split: ForgetSplit, device: torch.device, share: float
) -> dict[str, torch.Tensor]:
    """True for the `share` of weights with the largest forget-loss gradient magnitude."""
    x, y = split.forget
    model.zero_grad(set_to_none=True)
    with eval_mode(model):
        for start in range(0, len(y), 512):
            xb, yb = x[start : start + 512].to(device), y[start : start + 512].to(device)
            (F.cross_entropy(model(xb), yb, reduction="sum") / len(y)).backward()
    grads = {n: p.grad.abs() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    flat = torch.cat([g.reshape(-1) for g in grads.values()])
    keep = max(1, int(round(share * flat.numel())))
    threshold = flat.topk(keep).values.min()
    return {n: g >= threshold for n, g in grads.items()}


@METHODS.register("salun")
def salun(model: nn.Module, split: ForgetSplit, ctx: UnlearnContext) -> nn.Module:
    start_finetuning(model, ctx)
    mask = saliency_mask(model, split, ctx.device, ctx.cfg.saliency)
    total = sum(int(m.numel()) for m in mask.values())
    ctx.metrics["salient_share"] = sum(int(m.sum()) for m in mask.values()) / total
    loss = random_label_loss(model, split, ctx)
    return finetune_loop(model, split, ctx, steps_for(split, ctx.cfg), loss, "salun", mask=mask)
