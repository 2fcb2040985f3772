"""Evaluate the original, retrained and unlearned models of a run against each other."""

from __future__ import annotations

import math

from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.evaluation.catalogue import CATALOGUE
from unlearn_cli.evaluation.closeness import confusion_matrix, per_class_accuracy
from unlearn_cli.evaluation.metric_registry import Evaluation
from unlearn_cli.evaluation.metrics import true_class_confidence, view_logits
from unlearn_cli.evaluation.options import EvaluationOptions


def evaluate_models(
    models: dict[str, nn.Module],
    seconds: dict[str, float | None],
    split: ForgetSplit,
    device,
    cfg: EvaluationOptions,
    seed: int,
    counts: dict | None = None,
) -> tuple[dict[str, dict], dict, dict]:
    """Per-model metric rows (every family of the catalogue that applies), per-class details for
    metrics.json, and each model's true-class confidences on forget and test samples (plots)."""
    logits, labels = {}, {}
    for role, model in models.items():
        logits[role], labels = view_logits(model, split, device, cfg.batch_size)
    ev = Evaluation(models, split, cfg, seed, device, seconds, counts, logits, labels)
    rows = CATALOGUE.compute(ev)
    y_test = split.data.y_test
    full_test = {role: ev.test_logits(role) for role in models}
    details: dict = {
        "per_class_test_acc": {
            r: per_class_accuracy(full_test[r], y_test, split.data.classes) for r in models
        }
    }
    if cfg.confusion_matrix:
        details["confusion_matrix"] = {
            r: confusion_matrix(full_test[r], y_test, split.data.num_classes) for r in models
        }
    confidences = {
        role: {v: true_class_confidence(logits[role][v], labels[v]) for v in ("forget", "test")}
        for role in models
    }
    return rows, details, confidences


def evidence_verdict(rows: dict, split: ForgetSplit) -> str:
    """The plain-words caption of a run without a retrained reference."""
    after, before = rows["unlearned"], rows["original"]
    n_forget = len(split.forget_idx)
    if split.scenario == "class":
        unseen, n_unseen = "unseen images of the class", len(split.forget_test[1])
    else:
        unseen, n_unseen = "test samples", len(split.test[1])
    lead = after["forget_minus_unseen"]
    tolerance = two_standard_errors(after["forget_acc"], after["unseen_acc"], n_forget, n_unseen)
    if abs(lead) <= tolerance:
        finding = "no better on the forget set than on unseen data"
    elif lead > 0:
        finding = f"still {lead:.1f} points better on the forget set than on unseen data"
    else:  # over-forgetting is itself a trace of the deletion
        finding = f"{-lead:.1f} points worse on the forget set than on unseen data"
    parts = [
        "No retrained reference (evaluation.reference=none).",
        f"Forget accuracy {after['forget_acc']:.1f}% vs {after['unseen_acc']:.1f}% on {unseen} "
        f"(original {before['forget_acc']:.1f}% vs {before['unseen_acc']:.1f}%): {finding} "
        f"(+/-{tolerance:.1f}).",
    ]
    if split.scenario == "class":
        parts.append(
            f"A model retrained without the class would almost never predict it; this "
            f"one is right on {after['forget_test_acc']:.1f}% of its unseen images."
        )
    parts.append(f"MIA {after['MIA']:.1f} (original {before['MIA']:.1f}). These figures show "
                 "how the model treats the forgotten data, not that it matches a retrained "
                 "model: evidence of forgetting, not proof of unlearning.")  # fmt: skip
    return " ".join(parts)


def two_standard_errors(acc_a: float, acc_b: float, n_a: int, n_b: int) -> float:
    """Two standard errors (points) of the difference of two accuracies (%), at their pooled
    level: a smaller difference is within sampling noise."""
    p = (acc_a + acc_b) / 200.0
    return 200.0 * math.sqrt(max(p * (1 - p), 1e-4) * (1 / max(n_a, 1) + 1 / max(n_b, 1)))
