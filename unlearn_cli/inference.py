"""Running a model on tensors: eval mode, batched logits, accuracy (for methods and metrics)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the block, then every submodule back in the mode it was in."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int
) -> torch.Tensor:
    """Logits for `x` in eval mode, computed in batches on `device`, returned on the CPU."""
    with eval_mode(model):
        out = [
            model(x[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(x), batch_size)
        ]
    return torch.cat(out) if out else torch.empty(0)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Percent correct; NaN for an empty set (e.g. forget_test under random forgetting)."""
    if len(y) == 0:
        return math.nan
    return 100.0 * (logits.argmax(dim=1) == y).float().mean().item()
