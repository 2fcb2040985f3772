"""Representation evidence: probes and CKA on penultimate-layer features.

Ground truth: a "method" that only removes the forgotten class from the classifier head forgets
in its outputs (forget accuracy 0) but not in its features, and the probe must say so; a model
retrained without the class is blind to it, and the probe must measure that too.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unlearn_cli.data.dataset import ImageDataset
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.evaluation.representation import (
    linear_cka,
    penultimate_features,
    probe_halves,
    representation_metrics,
)
from unlearn_cli.inference import accuracy, predict_logits
from unlearn_cli.models.builders import Classifier
from unlearn_cli.training import TrainOptions, train_classifier

FORGOTTEN = 3
CPU = torch.device("cpu")


def blind_spot_data(per_class: int = 120, seed: int = 0) -> ImageDataset:
    """16 "pixels", 4 classes. Classes 0-2 light up their own block of 4 pixels; class 3 lights up
    class 0's block *and* a block of its own (pixels 12-15) that no other class ever uses (it is 0
    there). A model trained without class 3 gets no gradient from those pixels and weight decay
    drives their weights to 0: its features cannot tell class 3 from class 0."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), per_class)
    x = np.zeros((len(labels), 16), dtype=np.float32)
    noise = 0.4 * rng.normal(size=(len(labels), 12)).astype(np.float32)
    x[:, :12] = noise
    for c in range(3):
        x[labels == c, 4 * c : 4 * c + 4] += 2.0
    x[labels == 3, 0:4] += 2.0
    x[labels == 3, 12:16] = 2.0 + 0.4 * rng.normal(size=(per_class, 4)).astype(np.float32)
    images = torch.as_tensor(x).view(-1, 1, 4, 4)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(4):
        test[np.flatnonzero(labels == c)[: per_class // 2]] = True
    y = torch.as_tensor(labels)
    return ImageDataset(name="blind_spot", classes=("a", "b", "c", "d"),
                        x_train=images[~test], y_train=y[~test],
                        x_test=images[test], y_test=y[test])  # fmt: skip


def tiny_mlp(seed: int) -> Classifier:
    torch.manual_seed(seed)
    return Classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU()), nn.Linear(8, 4))


TRAIN = TrainOptions(epochs=40, batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9,
                     weight_decay=0.1, schedule="constant", checkpoint_every=0)  # fmt: skip


@pytest.fixture(scope="module")
def models_and_split():
    data = blind_spot_data()
    y = data.y_train.numpy()
    split = ForgetSplit(data, np.flatnonzero(y == FORGOTTEN), np.flatnonzero(y != FORGOTTEN),
                        (FORGOTTEN,), "d")  # fmt: skip
    original = tiny_mlp(0)
    train_classifier(original, data.x_train, data.y_train, TRAIN, CPU, 0, "original")
    retrain = tiny_mlp(0)
    train_classifier(retrain, data.x_train, data.y_train, TRAIN, CPU, 0, "retrain",
                     rows=split.retain_idx)  # fmt: skip
    head_only = copy.deepcopy(original)
    with torch.no_grad():  # remove the class from the head only: features stay the original's
        head_only.head.weight[FORGOTTEN] = 0.0
        head_only.head.bias[FORGOTTEN] = -1e4
    return {"original": original, "retrain": retrain, "unlearned": head_only}, split


def test_head_only_forgetting_is_caught_by_the_probe(models_and_split):
    models, split = models_and_split
    fx, fy = split.forget
    assert accuracy(predict_logits(models["original"], fx, CPU, 256), fy) > 95
    assert accuracy(predict_logits(models["unlearned"], fx, CPU, 256), fy) == 0.0
    figures = representation_metrics(models, split, CPU, 256, seed=0, max_samples=5000)
    orig, retrain, unlearned = (figures[r] for r in ("original", "retrain", "unlearned"))
    # The retrained model's features cannot tell class 3 from class 0: computed, near chance
    # between the two (about 50%), far below the original's.
    assert orig["probe_forget_acc"] > 90
    assert retrain["probe_forget_acc"] < 70
    assert orig["probe_forget_acc"] - retrain["probe_forget_acc"] > 25
    # The head-only "method" keeps the original's features: the probe recovers the class.
    assert unlearned["probe_forget_acc"] == pytest.approx(orig["probe_forget_acc"], abs=1e-9)
    assert unlearned["knn_forget_acc"] - retrain["knn_forget_acc"] > 25
    assert unlearned["probe_acc"] > retrain["probe_acc"]
    # CKA: the retrained model against itself is 1; the head-only model's features are the
    # original's, so its CKA to retrain is the original's, below 1.
    assert retrain["cka_forget"] == pytest.approx(1.0)
    assert unlearned["cka_forget"] == pytest.approx(orig["cka_forget"])
    assert unlearned["cka_test"] == pytest.approx(orig["cka_test"])
    assert orig["cka_forget"] < 0.99


def test_linear_cka_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6))
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    # invariant to rotation, isotropic scaling and an added constant; needs no equal widths
    assert linear_cka(a, 3.0 * a @ rotation + 5.0) == pytest.approx(1.0)
    assert linear_cka(a, np.hstack([a, a])) == pytest.approx(1.0)
    # hand-made case: b = first column only. CKA = ||b'a||^2 / (||a'a|| ||b'b||)
    b = a[:, :1]
    ac, bc = a - a.mean(0), b - b.mean(0)
    expected = np.linalg.norm(bc.T @ ac) ** 2 / (
        np.linalg.norm(ac.T @ ac) * np.linalg.norm(bc.T @ bc)
    )
    assert linear_cka(a, b) == pytest.approx(expected)
    # independent features: near 0 for many samples
    assert linear_cka(a, rng.normal(size=(200, 6))) < 0.15
    assert np.isnan(linear_cka(a, np.ones((200, 3))))
    with pytest.raises(ValueError):
        linear_cka(a, a[:10])


def test_probe_halves_are_stratified_and_disjoint():
    y = np.repeat(np.arange(3), [10, 7, 4])
    fit, score = probe_halves(y, seed=1)
    assert not set(fit) & set(score) and len(fit) + len(score) == len(y)
    for c in range(3):
        assert (y[fit] == c).sum() >= 2 and (y[score] == c).sum() >= 2


def test_features_of_an_ensemble_and_of_a_plain_network():
    members = [tiny_mlp(1), tiny_mlp(2)]

    class Ensemble(nn.Module):
        def __init__(self):
            super().__init__()
            self.members = nn.ModuleList(members)

        def forward(self, x):
            return sum(m(x) for m in self.members)

    x = torch.randn(5, 1, 4, 4)
    assert penultimate_features(Ensemble(), x, CPU, 2).shape == (5, 16)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(16, 7), nn.ReLU(), nn.Linear(7, 4))
    feats = penultimate_features(plain, x, CPU, 2)
    expected = plain[2](plain[1](plain[0](x))).detach().double().numpy()
    assert np.allclose(feats, expected)


def test_report_says_where_a_class_was_forgotten():
    import pandas as pd

    from unlearn_cli.evaluation.report import FLOOR, ORIGINAL, forgotten_in

    cell = {"dataset": "d", "model": "m", "scenario": "class: elephant"}
    rows = [  # method, UA, probe_forget_acc
        (ORIGINAL, 1.0, 95.0), ("retrain", 100.0, 35.0), (FLOOR, 100.0, 36.0),
        ("deep", 99.0, 50.0),  # forgot in its outputs, and its features closed 45 of 60 points
        ("shallow", 100.0, 90.0),  # forgot in its outputs only: the probe still finds the class
        ("nothing", 20.0, 94.0),  # still predicts the class
    ]  # fmt: skip
    table = pd.DataFrame([{**cell, "method": m, "UA": ua, "probe_forget_acc": p}
                          for m, ua, p in rows])  # fmt: skip
    marks = dict(zip(table["method"], forgotten_in(table), strict=True))
    assert marks == {ORIGINAL: "", "retrain": "", FLOOR: "", "deep": "features",
                     "shallow": "head only", "nothing": "not forgotten"}  # fmt: skip
    # retrains of other seeds that differ as much as original and retrain: no verdict
    noisy = table.assign(probe_forget_acc=table["probe_forget_acc"].where(
        table["method"] != FLOOR, 70.0))  # fmt: skip
    marks = dict(zip(noisy["method"], forgotten_in(noisy), strict=True))
    assert marks["deep"] == marks["shallow"] == "probe can't tell"
    assert marks["nothing"] == "not forgotten"
    random = table.assign(scenario="random: random0.1")
    assert set(forgotten_in(random)) == {""}


def test_figures_reach_metrics_json_the_run_table_and_the_report(run_cli, tmp_path):
    import json

    from .conftest import TINY

    on = [o for o in TINY if not o.startswith("evaluation.representation")]
    proc = run_cli("run", *on, "method=finetune", check=True)
    assert "probe_forget_acc" in proc.stdout and "cka_forget" in proc.stdout
    (metrics,) = (tmp_path / "outputs" / "runs").glob("*/metrics.json")
    models = json.loads(metrics.read_text())["models"]
    for role in ("original", "retrain", "unlearned"):
        assert 0 <= models[role]["probe_forget_acc"] <= 100
        assert 0 <= models[role]["knn_acc"] <= 100
    assert models["retrain"]["cka_forget"] == pytest.approx(1.0)
    assert 0 <= models["unlearned"]["cka_test"] <= 1
    report = run_cli("report", str(metrics.parent), "--csv", "r.csv", check=True)
    assert "inside the model" in report.stdout
    header = (tmp_path / "r.csv").read_text().splitlines()[0]
    assert "probe_forget_acc" in header and "cka_test" in header
    off = run_cli("run", *TINY, "method=finetune", check=True)
    assert "probe_forget_acc" not in off.stdout
