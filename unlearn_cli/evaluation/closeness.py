"""How close a model is to the retrained one, in outputs and in weights, and per-class accuracy."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def output_closeness(logits: torch.Tensor, reference: torch.Tensor, prefix: str) -> dict:
    """Mean KL(reference || model), JS divergence (nats, <= ln 2) and % prediction agreement."""
    if len(logits) == 0:
        return {f"kl_{prefix}": math.nan, f"js_{prefix}": math.nan, f"agree_{prefix}": math.nan}
    logp, logq = F.log_softmax(logits.double(), dim=1), F.log_softmax(reference.double(), dim=1)
    kl = (logq.exp() * (logq - logp)).sum(dim=1)
    logm = torch.logsumexp(torch.stack([logp, logq]), dim=0) - math.log(2)
    js = 0.5 * ((logp.exp() * (logp - logm)).sum(dim=1) + (logq.exp() * (logq - logm)).sum(dim=1))
    js = js.clamp_min(0.0)  # rounding can leave -1e-17 for identical outputs
    agree = (logits.argmax(1) == reference.argmax(1)).double().mean()
    return {f"kl_{prefix}": float(kl.mean()), f"js_{prefix}": float(js.mean()),
            f"agree_{prefix}": 100.0 * float(agree)}  # fmt: skip


def flat_weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().cpu().reshape(-1) for p in model.parameters()])


def weight_distance(model: nn.Module, original: nn.Module, retrained: nn.Module) -> float:
    """||w - w_retrain|| / ||w_original - w_retrain||: 1 = no closer than doing nothing."""
    w, o, r = flat_weights(model), flat_weights(original), flat_weights(retrained)
    if w.shape != r.shape or o.shape != r.shape:
        return math.nan  # e.g. an ensemble (sisa) against a single model
    return float((w - r).norm() / (o - r).norm().clamp_min(1e-12))


def per_class_accuracy(logits: torch.Tensor, y: torch.Tensor, classes) -> dict[str, float]:
    pred = logits.argmax(1)
    return {
        name: 100.0 * float((pred[y == c] == c).float().mean()) if (y == c).any() else math.nan
        for c, name in enumerate(classes)
    }


def confusion_matrix(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[list[int]]:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y.numpy(), logits.argmax(1).numpy()), 1)
    return matrix.tolist()
