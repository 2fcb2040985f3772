"""ssd: Selective Synaptic Dampening (Foster et al., AAAI 2024), retrain-free.

Importances are squared mini-batch gradients averaged over batches (as in the paper's reference
description): I_D over (shuffled) training data, I_Df over the forget set.
Weights specialised to the forget set, I_Df > alpha * I_D, are multiplied by
beta = min(lambda * I_D / I_Df, 1); every other weight is left untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.methods.base import METHODS, UnlearnContext
from unlearn_cli.methods.importance import squared_batch_gradients, subsample


@torch.no_grad()
def dampen(
    model: nn.Module,
    importance_all: dict[str, torch.Tensor],
    importance_forget: dict[str, torch.Tensor],
    alpha: float,
    lam: float,
) -> int:
    """Apply the SSD update in place; return how many weights were dampened."""
    changed = 0
    for name, p in model.named_parameters():
        i_d, i_f = importance_all[name], importance_forget[name]
        selected = i_f > alpha * i_d
        beta = (lam * i_d / i_f.clamp_min(1e-30)).clamp(max=1.0)
        p.copy_(torch.where(selected, p * beta, p))
        changed += int(selected.sum())
    return changed


@METHODS.register("ssd")
def ssd(model: nn.Module, split: ForgetSplit, ctx: UnlearnContext) -> nn.Module:
    cfg, device = ctx.cfg, ctx.device
    model.to(device)
    data = split.data
    x_all, y_all = subsample(data.x_train, data.y_train, cfg.importance_samples, ctx.seed)
    x_f, y_f = subsample(*split.forget, cfg.importance_samples, ctx.seed)
    bs = cfg.importance_batch_size
    importance_all = squared_batch_gradients(model, x_all, y_all, device, bs)
    importance_forget = squared_batch_gradients(model, x_f, y_f, device, bs)
    changed = dampen(model, importance_all, importance_forget, cfg.alpha, cfg.dampening)
    total = sum(p.numel() for p in model.parameters())
    ctx.metrics.update(dampened_weights=changed, dampened_share=changed / total)
    return model.eval()
