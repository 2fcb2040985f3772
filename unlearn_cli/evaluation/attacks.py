"""Threshold membership-inference attacks (Song & Mittal 2021 style), reported like MIA-efficacy.

Each attack scores samples (true-class confidence, prediction entropy, modified entropy), picks
the threshold that best separates retain samples (members) from test samples (non-members), in
balanced accuracy, and reports the % of forget samples it calls non-members: higher means the
forget set looks unseen, as it does to a retrained model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def entropy(logits: torch.Tensor) -> np.ndarray:
    logp = F.log_softmax(logits, dim=1)
    return (-(logp.exp() * logp).sum(dim=1)).numpy()


def modified_entropy(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i); low for members."""
    p = F.softmax(logits.double(), dim=1).clamp(1e-30, 1 - 1e-12)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    others = -(p * torch.log1p(-p))
    others = others.sum(dim=1) - others.gather(1, y[:, None]).squeeze(1)
    return (-(1 - p_y) * torch.log(p_y) + others).numpy()


def best_threshold(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """The threshold t maximising balanced accuracy of "score >= t means member"."""
    candidates = np.unique(np.concatenate([members, nonmembers]))
    m_sorted, n_sorted = np.sort(members), np.sort(nonmembers)
    tpr = 1 - np.searchsorted(m_sorted, candidates, side="left") / len(members)
    tnr = np.searchsorted(n_sorted, candidates, side="left") / len(nonmembers)
    return float(candidates[np.argmax(tpr + tnr)])


def threshold_attack(
    members: np.ndarray, nonmembers: np.ndarray, targets: np.ndarray, higher_is_member: bool
) -> float:
    """% of targets called non-members by the best member/non-member threshold."""
    if min(len(members), len(nonmembers), len(targets)) == 0:
        return math.nan
    sign = 1.0 if higher_is_member else -1.0
    t = best_threshold(sign * members, sign * nonmembers)
    return 100.0 * float(np.mean(sign * targets < t))


def threshold_attacks(logits: dict, labels: dict) -> dict[str, float]:
    """mia_conf, mia_entropy, mia_m_entropy from the logits of the retain/test/forget views."""
    conf = {k: F.softmax(v, dim=1).gather(1, labels[k][:, None]).squeeze(1).numpy()
            if len(labels[k]) else np.empty(0) for k, v in logits.items()}  # fmt: skip
    ent = {k: entropy(v) if len(labels[k]) else np.empty(0) for k, v in logits.items()}
    ment = {k: modified_entropy(v, labels[k]) if len(labels[k]) else np.empty(0)
            for k, v in logits.items()}  # fmt: skip
    return {
        "mia_conf": threshold_attack(conf["retain"], conf["test"], conf["forget"], True),
        "mia_entropy": threshold_attack(ent["retain"], ent["test"], ent["forget"], False),
        "mia_m_entropy": threshold_attack(ment["retain"], ment["test"], ment["forget"], False),
    }
