"""Evaluate the original, retrained and unlearned models of a run against each other."""

from __future__ import annotations

from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.evaluation.attacks import threshold_attacks
from unlearn_cli.evaluation.closeness import (
    confusion_matrix,
    output_closeness,
    per_class_accuracy,
    weight_distance,
)
from unlearn_cli.evaluation.metrics import (
    add_costs,
    add_gaps,
    core_metrics,
    predict_logits,
    true_class_confidence,
    view_logits,
)
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
    """Per-model metric rows (gaps and costs included), per-class details for metrics.json, and
    each model's true-class confidences on forget and test samples (for the plots)."""
    logits, labels = {}, {}
    for role, model in models.items():
        logits[role], labels = view_logits(model, split, device, cfg.batch_size)
    rows = {
        role: {
            **core_metrics(logits[role], labels, split.scenario, seed, cfg.mia_max_per_side),
            **threshold_attacks(logits[role], labels),
        }
        for role in models
    }
    add_gaps(rows)
    add_costs(rows, seconds, counts)
    for role in models:
        for view in ("forget", "test"):
            rows[role].update(output_closeness(logits[role][view], logits["retrain"][view], view))
        rows[role]["weight_distance"] = weight_distance(
            models[role], models["original"], models["retrain"]
        )
    x_test, y_test = split.data.x_test, split.data.y_test
    full_test = {r: predict_logits(m, x_test, device, cfg.batch_size) for r, m in models.items()}
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
