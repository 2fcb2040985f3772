"""Stronger evidence (issue 5): threshold attacks, closeness to retrain, per-class accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from unlearn_cli.evaluation.attacks import (
    best_threshold,
    entropy,
    modified_entropy,
    threshold_attack,
    threshold_attacks,
)
from unlearn_cli.evaluation.closeness import (
    confusion_matrix,
    output_closeness,
    per_class_accuracy,
    weight_distance,
)

rng = np.random.default_rng(0)


def test_best_threshold_separates():
    members, nonmembers = np.array([0.9, 0.95, 0.99]), np.array([0.2, 0.4, 0.5])
    t = best_threshold(members, nonmembers)
    assert 0.5 < t <= 0.9


def test_threshold_attack_directions():
    members, nonmembers = rng.normal(1.0, 0.1, 500), rng.normal(0.0, 0.1, 500)
    assert threshold_attack(members, nonmembers, rng.normal(1.0, 0.1, 100), True) < 5
    assert threshold_attack(members, nonmembers, rng.normal(0.0, 0.1, 100), True) > 95
    # Lower-is-member scores (entropies) flip the direction.
    assert threshold_attack(-members, -nonmembers, -rng.normal(0.0, 0.1, 100), False) > 95
    assert math.isnan(threshold_attack(members, nonmembers, np.empty(0), True))


def test_entropies():
    uniform = torch.zeros(1, 4)
    assert entropy(uniform)[0] == pytest.approx(math.log(4))
    confident = torch.tensor([[10.0, 0.0, 0.0]])
    right, wrong = (
        modified_entropy(confident, torch.tensor([0])),
        modified_entropy(confident, torch.tensor([1])),
    )
    assert right[0] < 0.01 < 5 < wrong[0]  # confidently right: member-like; wrong: not


def test_threshold_attacks_on_a_memorising_model():
    labels = {k: torch.zeros(200, dtype=torch.long) for k in ("retain", "test", "forget")}
    sure, unsure = torch.tensor([8.0, 0.0]), torch.tensor([1.0, 0.0])
    noise = lambda: 0.3 * torch.randn(200, 2, generator=torch.Generator().manual_seed(1))  # noqa: E731
    logits = {"retain": sure + noise(), "test": unsure + noise(), "forget": sure + noise()}
    remembered = threshold_attacks(logits, labels)
    logits["forget"] = unsure + noise()
    forgotten = threshold_attacks(logits, labels)
    for attack in ("mia_conf", "mia_entropy", "mia_m_entropy"):
        assert remembered[attack] < 10 < 90 < forgotten[attack], attack


def test_output_closeness():
    a = torch.randn(50, 5, generator=torch.Generator().manual_seed(0))
    same = output_closeness(a, a.clone(), "test")
    assert same == {"kl_test": pytest.approx(0, abs=1e-9), "js_test": pytest.approx(0, abs=1e-9),
                    "agree_test": 100.0}  # fmt: skip
    one_hot = torch.full((10, 2), -50.0)
    one_hot[:, 0] = 50.0
    flipped = one_hot.flip(1)
    far = output_closeness(one_hot, flipped, "forget")
    assert far["js_forget"] == pytest.approx(math.log(2), rel=1e-6)
    assert far["agree_forget"] == 0.0 and far["kl_forget"] > 50


def test_weight_distance_is_relative_to_the_original():
    torch.manual_seed(0)
    original, retrained = nn.Linear(3, 2), nn.Linear(3, 2)
    assert weight_distance(retrained, original, retrained) == 0.0
    assert weight_distance(original, original, retrained) == pytest.approx(1.0)
    halfway = nn.Linear(3, 2)
    with torch.no_grad():
        for h, o, r in zip(halfway.parameters(), original.parameters(), retrained.parameters(),
                           strict=True):  # fmt: skip
            h.copy_((o + r) / 2)
    assert weight_distance(halfway, original, retrained) == pytest.approx(0.5)
    assert math.isnan(weight_distance(nn.Linear(4, 2), original, retrained))


def test_per_class_accuracy_and_confusion():
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [2.0, 0, 0], [0, 0, 2.0]])
    y = torch.tensor([0, 1, 1, 2])
    assert per_class_accuracy(logits, y, ("a", "b", "c")) == {"a": 100.0, "b": 50.0, "c": 100.0}
    assert confusion_matrix(logits, y, 3) == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
