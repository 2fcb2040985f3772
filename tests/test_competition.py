"""The competition's forgetting-quality score on hand-made distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unlearn_cli.evaluation.competition import (
    epsilon_score,
    final_score,
    forgetting_quality,
    logit_scaled_confidence,
    sample_epsilon,
)

rng = np.random.default_rng(0)


def test_logit_scaled_confidence():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    s = logit_scaled_confidence(p.log(), torch.tensor([0]))
    assert s[0] == pytest.approx(math.log(0.7) - math.log(0.3))


def test_epsilon_binning():
    assert epsilon_score(0.0) == 1.0 and epsilon_score(0.49) == 1.0
    assert epsilon_score(0.5) == 0.5 and epsilon_score(1.2) == 0.25
    assert epsilon_score(math.inf) == 0.0


def test_identical_distributions_score_near_one():
    scores = rng.normal(size=(32, 200))
    f, eps = forgetting_quality(scores, scores.copy())
    assert f == pytest.approx(1.0)
    assert (eps < 0.5).all()


def test_score_falls_as_the_distributions_separate():
    scores = [
        forgetting_quality(rng.normal(size=(64, 100)), rng.normal(shift, 1, size=(64, 100)))[0]
        for shift in (0.0, 0.5, 1.5, 5.0)
    ]
    assert scores == sorted(scores, reverse=True) and scores[-1] < 0.01


def test_disjoint_distributions_score_near_zero():
    retrained = rng.normal(0, 1, size=(16, 100))
    unlearned = rng.normal(20, 1, size=(16, 100))
    f, eps = forgetting_quality(retrained, unlearned)
    assert f == pytest.approx(0.0)
    assert np.isinf(eps).all()


def test_partial_overlap_is_in_between():
    retrained = rng.normal(0, 1, size=(64, 100))
    unlearned = rng.normal(1.5, 1, size=(64, 100))
    f, _ = forgetting_quality(retrained, unlearned)
    assert 0.0 < f < 0.6
    assert sample_epsilon(retrained[:, 0], unlearned[:, 0]) > 0


def test_final_score_charges_lost_utility():
    assert final_score(0.8, 90.0, 100.0, 45.0, 50.0) == pytest.approx(0.8 * 0.9 * 0.9)


def test_audit_command_writes_scores(run_cli, tmp_path):
    import json

    from .conftest import TINY

    proc = run_cli("audit", "--methods", "influence,negative_gradient", "--models", "2", *TINY,
                   check=True)  # fmt: skip
    assert "Forgetting quality" in proc.stdout
    (folder,) = (tmp_path / "outputs" / "audits").iterdir()
    rows = {r["method"]: r for r in json.loads((folder / "audit.json").read_text())["rows"]}
    assert set(rows) == {"influence", "negative_gradient"}
    for row in rows.values():
        assert 0.0 <= row["F"] <= 1.0 and row["models"] == 2
        assert row["final_score"] <= row["F"] * (row["RA"] / row["RA_retrain"]) + 1e-9
    bad = run_cli("audit", "--methods", "influense", *TINY)
    assert bad.returncode == 2 and "Did you mean 'influence'?" in bad.stderr
