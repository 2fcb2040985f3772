"""Per-weight importances: diagonal Fisher information and squared mini-batch gradients.

Shared by `fisher` (noise scaled by the inverse Fisher), `ssd` (importance on forget vs all data)
and the EWC penalty. Per-sample gradients come from torch.func (vmap over grad), in eval mode so
batch norm uses its running statistics, a few samples at a time to bound memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from unlearn_cli.cost import add_grad, uncounted
from unlearn_cli.inference import eval_mode


def subsample(x: torch.Tensor, y: torch.Tensor, limit: int | None, seed: int, rows=None):
    """At most `limit` random rows of (x, y) (of its `rows` if given), gathering only those."""
    rows = torch.arange(len(y)) if rows is None else torch.as_tensor(rows)
    if limit is not None and len(rows) > limit:
        rows = rows[
            torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:limit]
        ]
    return x[rows], y[rows]


def diagonal_fisher(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, chunk: int = 64
) -> dict[str, torch.Tensor]:
    """{parameter name: mean over samples of (d loss_i / d theta)^2} at the current weights."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def sample_loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {**p, **buffers}, (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    add_grad(len(y))  # one traced call stands for every sample under vmap: counted here
    with eval_mode(model), uncounted():
        for start in range(0, len(y), chunk):
            xb, yb = x[start : start + chunk].to(device), y[start : start + chunk].to(device)
            for name, g in per_sample(params, xb, yb).items():
                fisher[name] += g.pow(2).sum(dim=0)
    return {n: f / max(len(y), 1) for n, f in fisher.items()}


def squared_batch_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int
) -> dict[str, torch.Tensor]:
    """{parameter name: mean over mini-batches of (d batch-mean loss / d theta)^2}.

    SSD's importance: a batch's gradient keeps what its samples agree on, so weights that one
    coherent subset (a forgotten class) depends on stand out against data drawn from everywhere.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = {n: torch.zeros_like(p) for n, p in params}
    batches = 0
    with eval_mode(model):
        for start in range(0, len(y), batch_size):
            xb, yb = (
                x[start : start + batch_size].to(device),
                y[start : start + batch_size].to(device),
            )
            grads = torch.autograd.grad(F.cross_entropy(model(xb), yb), [p for _, p in params])
            for (name, _), g in zip(params, grads, strict=True):
                total[name] += g.pow(2)
            batches += 1
    return {n: t / max(batches, 1) for n, t in total.items()}
