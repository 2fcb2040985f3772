"""Metric definitions (docs/metrics.md) on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unlearn_cli.evaluation.catalogue import gap_figures
from unlearn_cli.evaluation.metrics import (
    accuracy,
    add_costs,
    fit_mia_attack,
    loss_auc,
    mia_efficacy,
    true_class_confidence,
)

rng = np.random.default_rng(0)
MEMBER = np.clip(rng.normal(0.98, 0.01, 500), 0, 1)  # training samples: very confident
NONMEMBER = np.clip(rng.normal(0.60, 0.10, 500), 0, 1)  # unseen samples: less so


def test_accuracy_percent_and_empty():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 1])) == pytest.approx(75.0)
    assert math.isnan(accuracy(torch.empty(0, 2), torch.empty(0, dtype=torch.int64)))


def test_true_class_confidence():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    conf = true_class_confidence(logits, torch.tensor([1, 0]))
    assert conf == pytest.approx([0.5, 0.75])


def test_mia_efficacy_memorised_vs_forgotten():
    memorised = np.clip(rng.normal(0.98, 0.01, 200), 0, 1)  # forget set still looks trained-on
    forgotten = np.clip(rng.normal(0.60, 0.10, 200), 0, 1)  # forget set looks unseen
    assert mia_efficacy(MEMBER, NONMEMBER, memorised, seed=0, max_per_side=1000) < 5
    assert mia_efficacy(MEMBER, NONMEMBER, forgotten, seed=0, max_per_side=1000) > 90


def test_mia_efficacy_is_balanced_and_seeded():
    # 5000 members vs 100 non-members: an unbalanced fit would call everything a member.
    members = np.clip(rng.normal(0.98, 0.01, 5000), 0, 1)
    nonmembers = NONMEMBER[:100]
    target = np.clip(rng.normal(0.60, 0.10, 100), 0, 1)
    a = mia_efficacy(members, nonmembers, target, seed=1, max_per_side=10_000)
    assert a > 80
    assert a == mia_efficacy(members, nonmembers, target, seed=1, max_per_side=10_000)


def test_mia_attack_acc_says_whether_the_attack_separates_anything():
    _, separating = fit_mia_attack(MEMBER, NONMEMBER, seed=0, max_per_side=1000)
    assert separating > 95
    same = rng.uniform(0.4, 1.0, 2000)  # retain and test confidences drawn alike
    _, chance = fit_mia_attack(same[:1000], same[1000:], seed=0, max_per_side=1000)
    assert 45 < chance < 60
    attack, acc = fit_mia_attack(MEMBER, np.empty(0), seed=0, max_per_side=1000)
    assert attack is None and math.isnan(acc)


def test_loss_auc():
    low, high = np.full(50, 0.01), np.full(50, 2.0)
    assert loss_auc(low, high) == pytest.approx(1.0)  # forget samples fully exposed
    assert loss_auc(high, low) == pytest.approx(0.0)
    same = rng.exponential(size=2000)
    assert loss_auc(same[:1000], same[1000:]) == pytest.approx(0.5, abs=0.05)


def test_avg_gap_arithmetic():
    rows = {
        "original": {"UA": 10.0, "RA": 99.0, "TA": 90.0, "MIA": 20.0},
        "retrain": {"UA": 100.0, "RA": 98.0, "TA": 92.0, "MIA": 100.0},
        "unlearned": {"UA": 96.0, "RA": 97.0, "TA": 90.0, "MIA": 92.0},
    }
    gaps = {role: gap_figures(row, rows["retrain"]) for role, row in rows.items()}
    assert gaps["retrain"]["avg_gap"] == 0.0
    assert gaps["unlearned"]["gap_UA"] == 4.0 and gaps["unlearned"]["gap_MIA"] == 8.0
    assert gaps["unlearned"]["avg_gap"] == pytest.approx((4 + 1 + 2 + 8) / 4)
    assert gaps["original"]["avg_gap"] == pytest.approx((90 + 1 + 2 + 80) / 4)


def test_costs_and_speedup():
    rows = {"original": {}, "retrain": {}, "unlearned": {}}
    add_costs(rows, {"original": None, "retrain": 30.0, "unlearned": 3.0})
    assert rows["unlearned"]["speedup"] == pytest.approx(10.0)
    assert rows["retrain"]["speedup"] == pytest.approx(1.0)
    assert math.isnan(rows["original"]["time_s"]) and math.isnan(rows["original"]["speedup"])
