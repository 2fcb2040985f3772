"""KLoM (evaluation/klom.py) on hand-made margins, and its place in `unlearn audit`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from unlearn_cli.evaluation.klom import klom, klom_p95, margins, retrain_floor


def test_margin_is_true_logit_minus_logsumexp_of_the_others():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 500.0, 0.0], [1.0, 2.0, 3.0]])
    y = torch.tensor([0, 0, 2])
    m = margins(logits, y)
    assert m[0] == pytest.approx(2.0 - math.log(2.0))
    assert m[1] == -100.0  # clipped to [-100, 100]
    assert m[2] == pytest.approx(3.0 - math.log(math.exp(1.0) + math.exp(2.0)))


def test_identical_sets_score_about_zero():
    rng = np.random.default_rng(0)
    same = rng.normal(size=(16, 50))
    assert np.allclose(klom(same, same), 0.0)
    constant = np.full((8, 3), 4.2)  # one bin holds everything on both sides
    assert np.allclose(klom(constant, constant), 0.0)


def test_disjoint_sets_score_large():
    unlearned = np.full((10, 4), 9.0) + np.linspace(0, 0.1, 10)[:, None]
    retrained = np.full((10, 4), -9.0) + np.linspace(0, 0.1, 10)[:, None]
    # every unlearned margin lies in bins the retrained models never reach: q is floored at 1e-5
    assert np.allclose(klom(unlearned, retrained), math.log(1 / 1e-5), rtol=0.1)


def test_direction_is_unlearned_against_retrained():
    # hand-made: 4 unlearned models all at margin 0, 4 retrained models at 0, 0, 10, 10.
    # 20 bins over [0, 10]: p = (1, 0, ..., 0); q = (0.5, 0, ..., 0, 0.5).
    unlearned = np.zeros((4, 1))
    retrained = np.array([[0.0], [0.0], [10.0], [10.0]])
    # KL(p || q) = 1 * ln(1 / 0.5) = ln 2; the other direction would be
    # 0.5 ln(0.5 / 1) + 0.5 ln(0.5 / 1e-5), about 5.06.
    assert klom(unlearned, retrained)[0] == pytest.approx(math.log(2.0))
    assert klom(retrained, unlearned)[0] == pytest.approx(
        0.5 * math.log(0.5) + 0.5 * math.log(0.5 / 1e-5)
    )


def test_p95_and_the_half_vs_half_floor():
    rng = np.random.default_rng(1)
    values = np.zeros((2, 100))
    values[0, 95:] = 5.0  # 5 samples where the two sides differ
    assert klom_p95(values[:1], values[1:]) == pytest.approx(np.percentile(
        klom(values[:1], values[1:]), 95))  # fmt: skip
    retrained = rng.normal(size=(8, 200))
    floor = retrain_floor(retrained)
    assert 0 < floor < klom_p95(retrained[:4] + 5.0, retrained[4:])
    assert math.isnan(retrain_floor(retrained[:1]))
    with pytest.raises(ValueError):
        klom(retrained[:, :3], retrained[:, :4])


def test_audit_table_has_klom_per_split_and_the_floor_row(run_cli, tmp_path):
    from .conftest import TINY

    run_cli("audit", "--methods", "negative_gradient", "--models", "2", *TINY, check=True)
    (folder,) = (tmp_path / "outputs" / "audits").iterdir()
    rows = {r["method"]: r for r in json.loads((folder / "audit.json").read_text())["rows"]}
    assert set(rows) == {"negative_gradient", "retrain (half vs half)"}
    for view in ("forget", "retain", "validation"):
        assert rows["negative_gradient"][f"klom_{view}_p95"] >= 0.0
        assert rows["retrain (half vs half)"][f"klom_{view}_p95"] >= 0.0
    header = (folder / "audit.csv").read_text().splitlines()[0]
    assert "klom_forget_p95" in header and "klom_validation_p95" in header
