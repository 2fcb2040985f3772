"""The metric catalogue: every figure a run reports, declared once, in the order tables show them.

The run's table, metrics.json, `unlearn report` (and `--bench`, `--pick`), the sweep summary,
the report's plots, avg_gap / val_gap and docs/metrics.md's table all read this list. Adding a
metric: its computation in a module of evaluation/, and its family and entries here (or, from
any module, `CATALOGUE.family(...)` on the function that computes it), then
`python -m unlearn_cli.docs docs/metrics.md`. Definitions with formulas and references are in
docs/metrics.md.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from unlearn_cli.evaluation.attacks import threshold_attacks
from unlearn_cli.evaluation.closeness import output_closeness, weight_distance
from unlearn_cli.evaluation.metric_registry import Evaluation, Metric, MetricCatalogue
from unlearn_cli.evaluation.metrics import (
    add_costs,
    core_metrics,
    mean_gap,
    unseen_metrics,
    validation_metrics,
)
from unlearn_cli.evaluation.representation import representation_metrics
from unlearn_cli.inference import accuracy as percent_correct
from unlearn_cli.inference import predict_logits

CATALOGUE = MetricCatalogue()
REFERENCE = "evaluation.reference=retrain"  # the default: a retrained model to compare with
NO_REFERENCE = "evaluation.reference=none"
Rows = dict[str, dict[str, float]]


def has_reference(ev: Evaluation) -> bool:
    return ev.has_reference


def no_reference(ev: Evaluation) -> bool:
    return not ev.has_reference


@CATALOGUE.family(
    "accuracy",
    Metric("forget_acc", "%", "accuracy on the training samples to forget"),
    Metric("retain_acc", "%", "accuracy on the training samples to keep"),
    Metric("test_acc", "%", "held-out accuracy; for class forgetting over the remaining classes"),
    Metric("forget_test_acc", "%", "held-out accuracy on the forgotten classes", targets="class"),
    Metric("UA", "%", "unlearning accuracy, 100 - forget_acc", gap=True, val_gap=True,
           report="main", summary=True),
    Metric("RA", "%", "retain accuracy, retain_acc", gap=True, val_gap=True, report="main",
           summary=True),
    Metric("TA", "%", "test accuracy, test_acc", gap=True, report="main", summary=True),
    Metric("MIA", "%", "MIA-efficacy: % of forget samples an RBF SVC on true-class confidence "
           "(retain = member, test = non-member) calls non-members", gap=True, report="main",
           summary=True),
    Metric("mia_attack_acc", "%", "that SVC's accuracy on its own fit set: near 50 it separates "
           "nothing and MIA says little", report="main"),
    Metric("mia_auc", "0-1", "ROC-AUC of the loss separating forget samples from unseen ones of "
           "the same kind; 0.5 = indistinguishable", report="main", summary=True),
)  # fmt: skip
def accuracy(ev: Evaluation) -> Rows:
    opts = ev.options
    return {role: core_metrics(ev.logits[role], ev.labels, ev.split.scenario, ev.seed,
                               opts.mia_max_per_side) for role in ev.models}  # fmt: skip


@CATALOGUE.family(
    "attacks",
    Metric("mia_conf", "%", "threshold attack on true-class confidence: % of forget samples "
           "called non-members"),
    Metric("mia_entropy", "%", "the same on prediction entropy"),
    Metric("mia_m_entropy", "%", "the same on modified entropy (Song & Mittal 2021)"),
)  # fmt: skip
def attacks(ev: Evaluation) -> Rows:
    return {role: threshold_attacks(ev.logits[role], ev.labels) for role in ev.models}


# `gap_<m>` is declared for the gap's metrics registered so far; one registered later with
# gap=True makes the gap family return an undeclared figure, which fails loudly.
GAP_OF = CATALOGUE.names(gap=True)


@CATALOGUE.family(
    "gap",
    *(Metric(f"gap_{m}", "points", f"|{m} - {m} of retrain|", needs=REFERENCE, run_table=False)
      for m in GAP_OF),
    Metric("avg_gap", "points", f"mean of |m - m_retrain| over {', '.join(GAP_OF)} (SalUn's Avg. "
           "Gap); lower is better, retrain is 0", needs=REFERENCE, report="main", summary=True),
    when=has_reference,
)  # fmt: skip
def gaps(ev: Evaluation) -> Rows:
    return {role: gap_figures(row, ev.rows["retrain"]) for role, row in ev.rows.items()}


def gap_figures(row: dict[str, float], ref: dict[str, float]) -> dict[str, float]:
    """|m - m_retrain| for each metric of the gap, and their mean `avg_gap`."""
    figures = {f"gap_{m}": abs(row[m] - ref[m]) for m in CATALOGUE.names(gap=True)}
    return {**figures, "avg_gap": float(np.mean(list(figures.values())))}


@CATALOGUE.family(
    "validation",
    Metric("val_acc", "%", "accuracy on the validation split (of the remaining classes)",
           val_gap=True, report="tuning"),
    Metric("val_MIA", "%", "MIA with validation samples as the non-members", val_gap=True),
    Metric("val_gap", "points", "the tuning objective, blind to the test set: avg_gap over "
           "the metrics marked val_gap", needs=REFERENCE, report="main", summary=True),
)  # fmt: skip
def validation(ev: Evaluation) -> Rows:
    opts = ev.options
    out = {role: validation_metrics(ev.logits[role], ev.labels, ev.seed, opts.mia_max_per_side)
           for role in ev.models}  # fmt: skip
    if ev.has_reference:
        ref = {**ev.rows["retrain"], **out["retrain"]}
        for role, figures in out.items():
            figures["val_gap"] = val_gap_of({**ev.rows[role], **figures}, ref)
    return out


def val_gap_of(row: dict[str, float], ref: dict[str, float]) -> float:
    """Mean |m - m_retrain| over the val_gap metrics (nan for rows without them)."""
    return mean_gap(row, ref, CATALOGUE.names(val_gap=True))


@CATALOGUE.family(
    "cost",
    Metric("time_s", "s", "wall seconds of the unlearning step alone (for retrain, its "
           "training)", report="main", summary=True),
    Metric("speedup", "x", "retrain's time_s / this time_s", needs=REFERENCE, report="main",
           summary=True),
    Metric("grad_samples", "count", "sample-gradient evaluations of the network",
           run_table=False),
    Metric("forward_samples", "count", "forward-only sample passes", run_table=False),
    Metric("cost_units", "count", "3 x grad_samples + forward_samples: counted work no machine "
           "load moves"),
    Metric("cost_ratio", "x", "retrain's cost_units / this cost_units", needs=REFERENCE,
           report="main"),
    # Written by run.py from the method's figures; a column of every report, as before the
    # catalogue (sisa is in the benchmark).
    Metric("setup_s", "s", "seconds of sharded training before any deletion request (not in "
           "time_s)", needs="method=sisa", report="main", report_if_measured=False),
)  # fmt: skip
def cost(ev: Evaluation) -> Rows:
    rows: Rows = {role: {} for role in ev.models}
    add_costs(rows, ev.seconds, ev.counts)
    return rows


@CATALOGUE.family(
    "stream",
    Metric("UA_earlier", "%", "a stream's step: 100 - accuracy on the samples earlier requests "
           "forgot; it falls when the model re-learns them (reversal)", needs="stream",
           report="main"),
    # Each step's `cumulative.cost_ratio` (stream/run.py: it needs the steps before); the
    # report reads it there, as this figure of the step's unlearned model.
    Metric("cum_cost_ratio", "x", "a stream's step: the oracles' cost_units so far over the "
           "method's, the stream's cost against k retrainings", needs="stream", report="stream",
           run_table=False),
    when=lambda ev: len(ev.split.earlier_idx) > 0,
)  # fmt: skip
def stream(ev: Evaluation) -> Rows:
    return {role: {"UA_earlier": 100.0 - acc}
            for role, acc in accuracy_on_rows(ev, ev.split.earlier_idx).items()}  # fmt: skip


def accuracy_on_rows(ev: Evaluation, rows: np.ndarray) -> dict[str, float]:
    """Each model's accuracy (%) on training rows `rows`, against their training labels."""
    index = torch.as_tensor(rows)
    x, y = ev.split.data.x_train[index], ev.split.data.y_train[index]
    batch = ev.options.batch_size
    return {role: percent_correct(predict_logits(model, x, ev.device, batch), y)
            for role, model in ev.models.items()}  # fmt: skip


@CATALOGUE.family(
    "copies",
    Metric("copies_acc", "%", "accuracy on the planted copies of the request the retain set "
           "still holds (request.plant): the hidden channel through which a model keeps knowing "
           "a request whose copies it trained on", needs="request.plant", report="main"),
    Metric("UA_copied", "%", "UA on the request's samples that have planted copies "
           "(request.plant): where copies left in the retain set keep a retrained model knowing "
           "the request", needs="request.plant", report="main"),
    when=lambda ev: len(ev.split.planted_idx) > 0,
)  # fmt: skip
def copies(ev: Evaluation) -> Rows:
    rows: Rows = {role: {} for role in ev.models}
    left = np.intersect1d(ev.split.planted_idx, ev.split.retain_idx)
    if len(left):
        for role, acc in accuracy_on_rows(ev, left).items():
            rows[role]["copies_acc"] = acc
    sources = np.intersect1d(ev.split.planted_sources, ev.split.forget_idx)
    if len(sources):
        for role, acc in accuracy_on_rows(ev, sources).items():
            rows[role]["UA_copied"] = 100.0 - acc
    return rows


@CATALOGUE.family(
    "corruption",
    Metric("acc_corr", "%", "corrective unlearning: accuracy on the affected domain, patched "
           "test images of the other classes against their true labels (poison) or the two "
           "swapped classes' test images (confusion)", needs="corruption", report="main"),
    Metric("attack_success", "%", "poison: patched test images of the other classes that the "
           "model gives the target class", needs="corruption", report="main"),
    Metric("acc_retain", "%", "corrective unlearning: clean accuracy elsewhere, the clean test "
           "images (poison) or the other classes' (confusion)", needs="corruption",
           report="main"),
    Metric("left_manip_acc", "%", "the manipulated samples the request missed (still in the "
           "retain set), given their manipulated label: how much the model still follows the "
           "manipulation", needs="corruption", report="main"),
    Metric("gap_clean", "%", "mean |m - m_clean| over acc_corr, acc_retain (and attack_success) "
           "against the model retrained without every manipulated sample", needs="corruption",
           report="main"),
    when=lambda ev: ev.split.corruption is not None,
)  # fmt: skip
def corruption(ev: Evaluation) -> Rows:
    manipulation, data, batch = ev.split.corruption, ev.split.data, ev.options.batch_size
    x_test, y_test = data.x_test, data.y_test
    left = np.intersect1d(manipulation.left, ev.split.retain_idx)
    followed = accuracy_on_rows(ev, left) if len(left) else {}
    rows: Rows = {}
    for role, model in ev.models.items():
        test = ev.test_logits(role)  # the clean test images: no forward pass again
        if manipulation.kind == "poison":
            others = y_test != manipulation.target
            patched = predict_logits(model, manipulation.patched(x_test[others], data), ev.device,
                                     batch)  # fmt: skip
            hit = patched.argmax(dim=1) == manipulation.target
            row = {
                "acc_corr": percent_correct(patched, y_test[others]),
                "acc_retain": percent_correct(test, y_test),
                "attack_success": 100.0 * hit.double().mean().item() if len(hit) else math.nan,
            }
        else:
            pair = torch.isin(y_test, torch.as_tensor(manipulation.classes))
            row = {
                "acc_corr": percent_correct(test[pair], y_test[pair]),
                "acc_retain": percent_correct(test[~pair], y_test[~pair]),
            }
        row["left_manip_acc"] = followed.get(role, math.nan)
        rows[role] = row
    if "retrain_clean" in rows:
        wanted = rows["retrain_clean"]
        keys = [k for k in ("acc_corr", "acc_retain", "attack_success") if k in wanted]
        for row in rows.values():
            row["gap_clean"] = float(np.mean([abs(row[k] - wanted[k]) for k in keys]))
    return rows


@CATALOGUE.family(
    "closeness",
    Metric("agree_forget", "%", "forget samples on which the model predicts retrain's class",
           needs=REFERENCE),
    Metric("js_forget", "nats", "mean Jensen-Shannon divergence to retrain's softmax on the "
           "forget set (at most ln 2)", needs=REFERENCE),
    Metric("kl_forget", "nats", "mean KL(retrain || model) on the forget set", needs=REFERENCE),
    Metric("agree_test", "%", "the same agreement on the test set", needs=REFERENCE),
    Metric("js_test", "nats", "the same JS divergence on the test set", needs=REFERENCE),
    Metric("kl_test", "nats", "the same KL divergence on the test set", needs=REFERENCE),
    Metric("weight_distance", "ratio", "||w - w_retrain|| / ||w_original - w_retrain||: 0 = "
           "retrain's weights, 1 = no closer than doing nothing", needs=REFERENCE),
    when=has_reference,
)  # fmt: skip
def closeness(ev: Evaluation) -> Rows:
    original, retrain = ev.models["original"], ev.models["retrain"]
    out: Rows = {}
    for role, model in ev.models.items():
        out[role] = {}
        for view in ("forget", "test"):
            out[role].update(output_closeness(ev.logits[role][view], ev.logits["retrain"][view],
                                              view))  # fmt: skip
        out[role]["weight_distance"] = weight_distance(model, original, retrain)
    return out


# Written by run.py's call of evaluation/lira.py: their shadow models train from the run's config.
CATALOGUE.declare(
    "lira",
    Metric("lira_member", "%", "LiRA: % of forget samples that look trained-on to shadow models",
           needs="evaluation=lira"),
    computed_by="unlearn_cli.evaluation.lira",
)  # fmt: skip
CATALOGUE.declare(
    "ulira",
    Metric("ulira_member", "%", "U-LiRA: % of forget samples that look unlearned rather than "
           "retrained", needs="evaluation=ulira"),
    computed_by="unlearn_cli.evaluation.lira",
)  # fmt: skip

REPRESENTATION = "evaluation.representation"


@CATALOGUE.family(
    "representation",
    Metric("probe_forget_acc", "%", "a linear probe on penultimate-layer features, fitted on half "
           "the test images of all classes: accuracy on the forgotten class", targets="class",
           needs=REPRESENTATION, report="inside"),
    Metric("probe_acc", "%", "that probe's accuracy on all classes", targets="class",
           needs=REPRESENTATION, report="inside"),
    Metric("knn_forget_acc", "%", "the same with a cosine 5-NN: the forgotten class",
           targets="class", needs=REPRESENTATION, report="inside"),
    Metric("knn_acc", "%", "the 5-NN on all classes", targets="class", needs=REPRESENTATION,
           report="inside"),
    Metric("cka_forget", "0-1", "linear CKA of the features with retrain's on the forget set; "
           "1 = the same", needs=f"{REPRESENTATION}, {REFERENCE}", report="inside"),
    Metric("cka_test", "0-1", "the same on the test images", needs=f"{REPRESENTATION}, "
           f"{REFERENCE}", report="inside"),
    when=lambda ev: ev.options.representation,
)  # fmt: skip
def representation(ev: Evaluation) -> Rows:
    opts = ev.options
    return representation_metrics(ev.models, ev.split, ev.device, opts.batch_size, ev.seed,
                                  opts.representation_max_samples)  # fmt: skip


@CATALOGUE.family(
    "evidence",
    Metric("unseen_acc", "%", "accuracy on unseen data of the forget set's kind (the forgotten "
           "class's test images, or the test set)", needs=NO_REFERENCE, report="main"),
    Metric("forget_minus_unseen", "points", "forget_acc - unseen_acc: a model that forgot "
           "treats its forget set like unseen data", needs=NO_REFERENCE, report="main"),
    Metric("agree_orig_forget", "%", "forget samples on which the model predicts the "
           "original's class", needs=NO_REFERENCE, report="main"),
    Metric("kl_orig_forget", "nats", "mean KL(original || model) on the forget set",
           needs=NO_REFERENCE),
    Metric("agree_orig_test", "%", "the same agreement on the test set", needs=NO_REFERENCE),
    Metric("kl_orig_test", "nats", "the same KL divergence on the test set", needs=NO_REFERENCE),
    Metric("js_orig_forget", "nats", "mean JS divergence to the original on the forget set",
           needs=NO_REFERENCE, run_table=False),
    Metric("js_orig_test", "nats", "the same on the test set", needs=NO_REFERENCE,
           run_table=False),
    when=no_reference,
)  # fmt: skip
def evidence(ev: Evaluation) -> Rows:
    out: Rows = {}
    for role in ev.models:
        out[role] = {}
        for view in ("forget", "test"):
            out[role].update(output_closeness(ev.logits[role][view], ev.logits["original"][view],
                                              f"orig_{view}"))  # fmt: skip
        out[role].update(unseen_metrics(ev.rows[role], ev.split.scenario))
    return out
