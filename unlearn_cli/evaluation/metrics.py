"""Metric definitions of docs/metrics.md, on percentages 0-100.

forget/retain/test/forget_test accuracy; UA = 100 - forget_acc, RA = retain_acc, TA = test_acc;
MIA-efficacy (an RBF SVC on true-class confidence, retain = member vs test = non-member, applied to
the forget set) and that attack's accuracy on its own fit set (mia_attack_acc); mia_auc (ROC-AUC of
the loss separating forget from non-member samples).

The tuning objective never looks at the test set: `val_acc` (the validation split, of the
remaining classes) and `val_MIA` (the same SVC fit on retain vs *validation* confidences) stand in
for TA and MIA in `val_gap`, the gap to retrain that tuning sweeps minimise. `avg_gap` reports.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from sklearn.svm import SVC
from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.inference import accuracy, eval_mode, predict_logits  # noqa: F401 (re-exported)

# A default must forget without wrecking the model (docs/benchmark.md): it may lose at most this
# many points of accuracy against retrain's. Runs, reports and the tuning pick all apply it.
UTILITY_POINTS = 5.0


def true_class_confidence(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    if len(y) == 0:
        return np.empty(0, dtype=np.float32)
    return F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1).numpy()


def per_sample_loss(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    if len(y) == 0:
        return np.empty(0, dtype=np.float32)
    return F.cross_entropy(logits, y, reduction="none").numpy()


def fit_mia_attack(
    member_conf: np.ndarray, nonmember_conf: np.ndarray, seed: int, max_per_side: int
) -> tuple[SVC | None, float]:
    """The SVC of SalUn's SVC_MIA, fit on members vs non-members subsampled to the same size
    (balanced), and its accuracy (%) on that fit set: 50 means it separates nothing."""
    if len(member_conf) == 0 or len(nonmember_conf) == 0:
        return None, math.nan
    rng = np.random.default_rng(seed)
    n = min(len(member_conf), len(nonmember_conf), max_per_side)
    members = rng.choice(member_conf, size=n, replace=False)
    nonmembers = rng.choice(nonmember_conf, size=n, replace=False)
    features = np.concatenate([members, nonmembers])[:, None]
    labels = np.concatenate([np.ones(n), np.zeros(n)])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(features, labels)
    return attack, 100.0 * float(attack.score(features, labels))


def mia_efficacy(
    member_conf: np.ndarray,
    nonmember_conf: np.ndarray,
    target_conf: np.ndarray,
    seed: int,
    max_per_side: int,
) -> float:
    """% of target samples that an SVC, fit on members vs non-members, calls non-members."""
    attack, _ = fit_mia_attack(member_conf, nonmember_conf, seed, max_per_side)
    return efficacy_of(attack, target_conf)


def efficacy_of(attack: SVC | None, target_conf: np.ndarray) -> float:
    if attack is None or len(target_conf) == 0:
        return math.nan
    predicted = attack.predict(np.asarray(target_conf)[:, None])
    return 100.0 * float(np.mean(predicted == 0))


def loss_auc(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> float:
    """ROC-AUC of "lower loss means member": 0.5 = indistinguishable, 1 = fully exposed."""
    if len(member_loss) == 0 or len(nonmember_loss) == 0:
        return math.nan
    labels = np.concatenate([np.ones(len(member_loss)), np.zeros(len(nonmember_loss))])
    scores = -np.concatenate([member_loss, nonmember_loss])
    return float(roc_auc_score(labels, scores))


VIEWS = ("forget", "retain", "test", "forget_test", "validation")
SCORED = ("forget", "retain", "test", "forget_test")  # the views of the evaluation figures


def view_logits(
    model: nn.Module, split: ForgetSplit, device: torch.device, batch_size: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Logits and labels of the forget, retain, test, forget_test and validation views."""
    views = {k: getattr(split, k) for k in VIEWS}
    logits = {k: predict_logits(model, x, device, batch_size) for k, (x, _) in views.items()}
    return logits, {k: y for k, (_, y) in views.items()}


def core_metrics(
    logits: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor],
    scenario: str,
    seed: int,
    mia_max_per_side: int,
) -> dict[str, float]:
    """Accuracies, UA/RA/TA, MIA-efficacy and the loss ROC-AUC of one model."""
    acc = {f"{k}_acc": accuracy(logits[k], labels[k]) for k in SCORED}
    conf = {k: true_class_confidence(logits[k], labels[k]) for k in SCORED}
    loss = {k: per_sample_loss(logits[k], labels[k]) for k in SCORED}
    # Non-members for the loss AUC: unseen samples of the same distribution as the forget set.
    reference = "forget_test" if scenario == "class" else "test"
    attack, attack_acc = fit_mia_attack(conf["retain"], conf["test"], seed, mia_max_per_side)
    return {
        **acc,
        "UA": 100.0 - acc["forget_acc"],
        "RA": acc["retain_acc"],
        "TA": acc["test_acc"],
        "MIA": efficacy_of(attack, conf["forget"]),
        # Where the attack cannot tell retain from test (about 50), MIA only says on which side
        # of an arbitrary boundary the forget set fell: 0 and 100 are then equally meaningless.
        "mia_attack_acc": attack_acc,
        "mia_auc": loss_auc(loss["forget"], loss[reference]),
    }


def validation_metrics(
    logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], seed: int,
    mia_max_per_side: int,
) -> dict[str, float]:  # fmt: skip
    """The tuning objective's figures of one model, blind to the test set: the validation
    split's accuracy and the MIA fit on retain vs validation confidences."""
    conf = {k: true_class_confidence(logits[k], labels[k]) for k in ("retain", "validation")}
    val_attack, _ = fit_mia_attack(conf["retain"], conf["validation"], seed, mia_max_per_side)
    forget_conf = true_class_confidence(logits["forget"], labels["forget"])
    return {"val_acc": accuracy(logits["validation"], labels["validation"]),
            "val_MIA": efficacy_of(val_attack, forget_conf)}  # fmt: skip


def mean_gap(row: dict[str, float], ref: dict[str, float], names: tuple[str, ...]) -> float:
    """Mean |m - m_ref| over `names` (nan where a row lacks one): avg_gap and val_gap."""
    return float(np.mean([abs(row.get(m, math.nan) - ref.get(m, math.nan)) for m in names]))


def unseen_metrics(row: dict, scenario: str) -> dict[str, float]:
    """Accuracy on unseen data of the forget set's kind (the forgotten class's test images, or
    the test set for samples) and the forget set's lead over it: a model that has forgotten
    treats its forget set like data it never saw."""
    unseen = row["forget_test_acc"] if scenario == "class" else row["test_acc"]
    return {"unseen_acc": unseen, "forget_minus_unseen": row["forget_acc"] - unseen}


def add_costs(
    rows: dict[str, dict[str, float]], seconds: dict[str, float | None], counts: dict | None = None
) -> None:
    """time_s of each model's unlearning step and speedup = retrain time_s / time_s; with the
    counted sample passes (`cost.Cost`), grad_samples, forward_samples, cost_units and
    cost_ratio = retrain's cost_units / this one's."""
    oracle = "retrain" in seconds  # without a retrained reference there is nothing to compare
    retrain_s = seconds.get("retrain")
    counts = counts or {}
    retrain_units = counts["retrain"].units if counts.get("retrain") else None
    for name, row in rows.items():
        s = seconds.get(name)
        row["time_s"] = math.nan if s is None else s
        if oracle:
            row["speedup"] = math.nan if not s or retrain_s is None else retrain_s / s
        cost = counts.get(name)
        if cost is None:
            continue
        row.update(grad_samples=cost.grad_samples, forward_samples=cost.forward_samples,
                   cost_units=cost.units)  # fmt: skip
        if oracle:
            row["cost_ratio"] = (retrain_units / cost.units if retrain_units and cost.units
                                 else math.nan)  # fmt: skip
