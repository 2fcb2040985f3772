"""The NeurIPS 2023 machine-unlearning competition's forgetting-quality score.

For every forget sample, N retrained and N unlearned models each give a logit-scaled confidence
s = log p_y - log sum_{j != y} p_j. Threshold attacks try to tell the two sets of N values apart;
each threshold's false-positive and false-negative rates give
    epsilon = max(log(1 - delta - FPR) - log(FNR), log(1 - delta - FNR) - log(FPR))
(attacks with FPR or FNR of zero, unless both are, are discarded as unestimable; both zero is a
perfect separation, epsilon = inf). The sample's epsilon is the best attack's, clipped at 0; it
is binned in width 0.5 and scored H = 2 / 2^bin with bin = floor(epsilon / 0.5) + 1, so
epsilon < 0.5 scores 1, [0.5, 1) scores 0.5, ... and a perfect separation 0. F is the mean H over
the forget set, and the final score F * (RA_u / RA_r) * (TA_u / TA_r) charges lost utility.

Caveat: the best of many thresholds on N values per side overstates epsilon for small N, so two
samples of the *same* distribution score F of only about 0.2-0.3 (measured for N = 8 to 512);
compare methods at equal N, and read F against the retrained-vs-retrained level.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def logit_scaled_confidence(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """log p_y - log sum_{j != y} p_j, computed stably from logits."""
    logp = F.log_softmax(logits.double(), dim=1)
    log_py = logp.gather(1, y[:, None]).squeeze(1)
    others = logp.clone()
    others[torch.arange(len(y)), y] = -math.inf
    return (log_py - torch.logsumexp(others, dim=1)).numpy()


def attack_rates(retrained: np.ndarray, unlearned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and FNR of every threshold attack, in both orientations."""
    thresholds = np.concatenate([np.unique(np.concatenate([retrained, unlearned])), [np.inf]])
    # "unlearned if s >= t": a false positive is a retrained value >= t
    fpr = np.array([(retrained >= t).mean() for t in thresholds])
    fnr = np.array([(unlearned < t).mean() for t in thresholds])
    # the opposite orientation, "unlearned if s < t"
    return np.concatenate([fpr, 1 - fpr]), np.concatenate([fnr, 1 - fnr])


def sample_epsilon(retrained: np.ndarray, unlearned: np.ndarray, delta: float = 1e-5) -> float:
    fpr, fnr = attack_rates(np.asarray(retrained), np.asarray(unlearned))
    best = 0.0
    for a, b in zip(fpr, fnr, strict=True):
        if a == 0 and b == 0:
            return math.inf
        if a == 0 or b == 0:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            candidates = (np.log(1 - delta - a) - np.log(b), np.log(1 - delta - b) - np.log(a))
        finite = [float(e) for e in candidates if not np.isnan(e)]
        if finite:
            best = max(best, *finite)
    return best


def epsilon_score(epsilon: float, bin_width: float = 0.5) -> float:
    if math.isinf(epsilon):
        return 0.0
    return 2.0 / 2.0 ** (math.floor(max(epsilon, 0.0) / bin_width) + 1)


def forgetting_quality(
    retrained_scores: np.ndarray, unlearned_scores: np.ndarray, delta: float = 1e-5
) -> tuple[float, np.ndarray]:
    """F over the forget set from (N models x samples) score arrays; also each sample's epsilon."""
    retrained_scores, unlearned_scores = np.asarray(retrained_scores), np.asarray(unlearned_scores)
    eps = np.array([
        sample_epsilon(retrained_scores[:, i], unlearned_scores[:, i], delta)
        for i in range(retrained_scores.shape[1])
    ])  # fmt: skip
    return float(np.mean([epsilon_score(e) for e in eps])), eps


def final_score(f: float, ra_u: float, ra_r: float, ta_u: float, ta_r: float) -> float:
    return f * (ra_u / ra_r) * (ta_u / ta_r)
