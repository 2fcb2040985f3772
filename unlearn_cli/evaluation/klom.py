"""KLoM, "KL divergence of margins" (Georgiev et al. 2024, "Attribute-to-Delete"; the score of
Easy Data Unlearning Bench, arXiv 2602.16400), for `unlearn audit`.

Per sample x with label y and per model, the margin m = z_y - logsumexp_{j != y} z_j (the
logit-scaled confidence of the competition score), clipped to [-100, 100]. Over N unlearned
models and N retrained models, both sets of margins of x are put in a histogram of 20 equal-width
bins spanning their combined range, and

    KLoM(x) = sum over bins b with p_b > 0 of  p_b * ln(p_b / max(q_b, 1e-5))

**Direction**: p is the *unlearned* models' histogram and q the *retrained* (oracle) models',
i.e. KL(unlearned || retrained): it is large where unlearned models put margins where retrained
models never do. (The public benchmark code can be read both ways; this is the one we chose and
the one the tests pin.) 0 is ideal. A finite N leaves some divergence even between two sets of
retrained models: the audit reports that floor by splitting its retrained models in two halves.
"""

from __future__ import annotations

import numpy as np
import torch

MARGIN_CLIP = 100.0
BINS = 20
Q_FLOOR = 1e-5


def margins(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """z_y - logsumexp_{j != y} z_j per sample, clipped to [-100, 100] (float64)."""
    z = logits.double()
    true = z.gather(1, y[:, None]).squeeze(1)
    others = z.scatter(1, y[:, None], float("-inf")).logsumexp(dim=1)
    return (true - others).clamp(-MARGIN_CLIP, MARGIN_CLIP).numpy()


def klom(unlearned: np.ndarray, retrained: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Per-sample KLoM of margins, arrays (models, samples) -> (samples,): KL(p || q) with p the
    unlearned and q the retrained models' histogram (see the module docstring)."""
    unlearned, retrained = np.atleast_2d(unlearned), np.atleast_2d(retrained)
    if unlearned.shape[1] != retrained.shape[1]:
        raise ValueError("unlearned and retrained margins must cover the same samples")
    out = np.empty(unlearned.shape[1])
    for i in range(unlearned.shape[1]):
        both = np.concatenate([unlearned[:, i], retrained[:, i]])
        edges = np.histogram_bin_edges(both, bins=bins, range=(both.min(), both.max()))
        p = np.histogram(unlearned[:, i], bins=edges)[0] / len(unlearned)
        q = np.histogram(retrained[:, i], bins=edges)[0] / len(retrained)
        kept = p > 0
        out[i] = float(np.sum(p[kept] * np.log(p[kept] / np.maximum(q[kept], Q_FLOOR))))
    return out


def klom_p95(unlearned: np.ndarray, retrained: np.ndarray) -> float:
    """The 95th percentile of per-sample KLoM (the benchmark's summary)."""
    if unlearned.size == 0:
        return float("nan")
    return float(np.percentile(klom(unlearned, retrained), 95))


def retrain_floor(retrained: np.ndarray) -> float:
    """KLoM P95 of one half of the retrained models against the other half: the level a method
    indistinguishable from retraining would reach with this many models (NaN below 2)."""
    half = len(retrained) // 2
    if half < 1:
        return float("nan")
    return klom_p95(retrained[:half], retrained[half : 2 * half])
