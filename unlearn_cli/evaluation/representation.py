"""Evidence from inside the model: what its penultimate-layer features still know.

Output metrics (UA, MIA) cannot tell a model that forgot from one whose classifier head was merely
turned away from the forgotten data while its features still separate it ("Are We Truly
Forgetting?", Kim et al. 2025; "An Illusion of Unlearning?", Gao et al. 2026). Two figures look
past the head:

- **Probes** (class forgetting): a fresh linear classifier (scikit-learn logistic regression on
  standardised features) and a cosine k-NN (k = 5), fitted on the features of one stratified half
  of the test images of *all* classes, the forgotten ones included, and scored on the other half:
  `probe_acc` / `knn_acc` over all classes and `probe_forget_acc` / `knn_forget_acc` on the
  forgotten classes' images. A retrained model never saw the class, so its value is the level
  features without the class reach; an unlearned model far above it still holds the class in its
  features, whatever its head says.
- **Linear CKA** (every scenario; Kornblith et al. 2019): the similarity of a model's features to
  the retrained model's on the forget set (`cka_forget`) and on the test images (`cka_test`), 1 =
  the same up to rotation and scale. Set beside the original's CKA to retrain, it says how far a
  method moved the representation toward retrain's, not just the outputs; the "retrain, other
  seed" model's CKA is the level two exact retrainings reach.

These are evaluation figures: they use the test set, and no method sees them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.inference import eval_mode

KNN_NEIGHBOURS = 5
PROBE_METRICS = ("probe_acc", "probe_forget_acc", "knn_acc", "knn_forget_acc")
CKA_METRICS = ("cka_forget", "cka_test")
REPRESENTATION_METRICS = (*PROBE_METRICS, *CKA_METRICS)


def feature_extractor(model: nn.Module):
    """The function from inputs to penultimate-layer features: a `Classifier`'s `features`, the
    concatenated features of an ensemble's members (SISA), else the input of the last Linear."""
    members = getattr(model, "members", None)
    if members is not None:
        parts = [feature_extractor(m) for m in members]
        return lambda x: torch.cat([part(x) for part in parts], dim=1)
    if isinstance(getattr(model, "features", None), nn.Module) and hasattr(model, "head"):
        return lambda x: model.features(x).flatten(1)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError(f"{type(model).__name__} has no linear head to take features before")
    seen: list[torch.Tensor] = []

    def grab(x: torch.Tensor) -> torch.Tensor:
        handle = last[-1].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            model(x)
        finally:
            handle.remove()
        return seen.pop().flatten(1)

    return grab


@torch.no_grad()
def penultimate_features(
    model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int
) -> np.ndarray:
    """Penultimate-layer features of `x` (eval mode, in batches), float64 on the CPU."""
    extract = feature_extractor(model)
    with eval_mode(model):
        out = [extract(x[i : i + batch_size].to(device)).double().cpu()
               for i in range(0, len(x), batch_size)]  # fmt: skip
    return torch.cat(out).numpy() if out else np.empty((0, 0))


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA of two feature matrices of the same n samples (columns may differ):
    ||B'A||_F^2 / (||A'A||_F ||B'B||_F) after centring each column; NaN if either is constant."""
    if len(a) != len(b):
        raise ValueError(f"CKA needs the same samples on both sides, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return math.nan
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    cross = np.linalg.norm(b.T @ a) ** 2
    norm = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(cross / norm) if norm > 0 else math.nan


def probe_halves(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified half/half split of the held-out images (every class on both sides)."""
    rng = np.random.default_rng(seed)
    fit, score = [], []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        half = len(rows) // 2
        fit.append(rows[:half])
        score.append(rows[half:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(score))


def probe_scores(
    features: np.ndarray,
    y: np.ndarray,
    forget_classes: tuple[int, ...],
    halves: tuple[np.ndarray, np.ndarray],
) -> dict[str, float]:
    """Linear-probe and cosine k-NN accuracy (%), all classes and the forgotten ones."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fit, score = halves
    if len(np.unique(y[fit])) < 2:
        return dict.fromkeys(PROBE_METRICS, math.nan)
    forgotten = np.isin(y[score], forget_classes)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    with warnings.catch_warnings():  # a probe that has not fully converged is still a probe
        warnings.simplefilter("ignore")
        probe.fit(features[fit], y[fit])
    knn = KNeighborsClassifier(n_neighbors=min(KNN_NEIGHBOURS, len(fit)), metric="cosine")
    knn.fit(features[fit], y[fit])
    out = {}
    for name, classifier in (("probe", probe), ("knn", knn)):
        right = classifier.predict(features[score]) == y[score]
        out[f"{name}_acc"] = 100.0 * float(right.mean())
        out[f"{name}_forget_acc"] = (
            100.0 * float(right[forgotten].mean()) if forgotten.any() else math.nan
        )
    return out


def subsample_rows(n: int, cap: int, seed: int) -> np.ndarray:
    """All of `range(n)`, or a fixed random `cap` of them (sorted)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def representation_metrics(
    models: dict[str, nn.Module],
    split: ForgetSplit,
    device: torch.device,
    batch_size: int,
    seed: int,
    max_samples: int,
) -> dict[str, dict[str, float]]:
    """Per model role: the probe figures (class forgetting) and, where a "retrain" model is among
    `models`, linear CKA to it on forget and test images. At most `max_samples` images per view."""
    x_test, y_test = split.data.x_test, split.data.y_test
    test_rows = torch.as_tensor(subsample_rows(len(y_test), max_samples, seed))
    x_test, y_test = x_test[test_rows], y_test[test_rows].numpy()
    forget_rows = subsample_rows(len(split.forget_idx), max_samples, seed)
    x_forget = split.data.x_train[torch.as_tensor(split.forget_idx[forget_rows])]
    test_features = {r: penultimate_features(m, x_test, device, batch_size)
                     for r, m in models.items()}  # fmt: skip
    out: dict[str, dict[str, float]] = {role: {} for role in models}
    if split.scenario == "class":
        halves = probe_halves(y_test, seed)
        for role, features in test_features.items():
            out[role].update(probe_scores(features, y_test, split.forget_classes, halves))
    if "retrain" in models:
        forget_features = {r: penultimate_features(m, x_forget, device, batch_size)
                           for r, m in models.items()}  # fmt: skip
        for role in models:
            out[role]["cka_forget"] = linear_cka(forget_features[role], forget_features["retrain"])
            out[role]["cka_test"] = linear_cka(test_features[role], test_features["retrain"])
    return out
