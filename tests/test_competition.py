"""The competition's forgetting-quality score on hand-made distributions.

Reference values marked "official" come from google-deepmind/unlearning_evaluation's metric.py
(commit ffae0ff), run on CPU: a throwaway copy with `.cuda()` removed and `assert thr_eps`
(which raises on any array of two or more) replaced by `assert len(thr_eps) > 0`; per-example
epsilons from its `_get_epsilons` after the same positive/negative choice as
`compute_forget_score_from_confs`, F from `compute_forget_score_from_confs` itself, and
"single threshold only" from the same run with `_get_double_threshold_rates` returning no attacks.
The official code computes rates and epsilons in float32, hence the 2e-6 tolerance.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from unlearn_cli.evaluation import competition
from unlearn_cli.evaluation.competition import (
    epsilon_score,
    example_epsilons,
    final_score,
    forgetting_quality,
    logit_scaled_confidence,
    sample_epsilon,
)

rng = np.random.default_rng(0)

# official per-example epsilons for test_independent_samples_match_official
# fmt: off
SAME_64_EPS = [1.7916526794, 0.6928267479, 2.0793614388, 1.0983986855, 1.6093096733,
               1.9458186626, 2.5648999214, 0.8108946085, 1.098505497, 1.3861341476,
               1.3861341476, 1.0983986855, 1.7916526794, 1.6093096733, 1.3861341476,
               1.7916526794, 0.9807491302, 1.3861341476, 1.7916526794, 2.1971533298]
SHIFTED_16_EPS = [1.3862543106, 1.9458873272, 2.0794215202, 1.3862543106, 1.6094058752,
                  2.3978807926, 2.0794215202, 1.2992683649, 1.9458873272, 1.6094058752]
# fmt: on


def close(value, ref):
    return np.asarray(value) == pytest.approx(np.asarray(ref), abs=2e-6)


def column(*values):
    return np.array(values, dtype=np.float64)[:, None]


def test_logit_scaled_confidence():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    s = logit_scaled_confidence(p.log(), torch.tensor([0]))
    assert s[0] == pytest.approx(math.log(0.7) - math.log(0.3))


def test_epsilon_binning():
    # N = 8: bins end at or below ceil(ln 7) = 2, so four of them
    assert epsilon_score(0.0, 8) == 1.0 and epsilon_score(0.49, 8) == 1.0
    assert epsilon_score(0.5, 8) == 0.5 and epsilon_score(1.2, 8) == 0.25
    assert epsilon_score(1.99, 8) == 0.125 and epsilon_score(2.0, 8) == 0.0
    assert epsilon_score(50.0, 8) == 0.0 and epsilon_score(math.inf, 8) == 0.0
    # N = 32: ceil(ln 31) = 4, eight bins; N = 2: ceil(ln 1) = 0, no bin scores at all
    assert epsilon_score(3.9, 32) == 2.0**-7 and epsilon_score(4.0, 32) == 0.0
    assert epsilon_score(0.0, 2) == 0.0


def test_constant_unlearned_output_scores_zero():
    # unlearned side identical across models: spread 0 < 1% of the retrained spread, so the
    # example is capped at 50 (official: eps 50, F 0.000); the old scoring gave F 0.975 here
    retrained = column(-1.3, -0.4, 0.2, 0.9, 1.7, 2.1, -2.2, 0.05)
    f, eps = forgetting_quality(retrained, np.full((8, 1), 0.3))
    assert f == 0.0 and eps.tolist() == [50.0]
    f, eps = forgetting_quality(np.tile(retrained, 40), np.full((8, 40), 0.3))
    assert f == 0.0 and (eps == 50.0).all()


def test_one_percent_spread_rule():
    # retrained spread 2 with one value inside a tight unlearned cluster; unlearned spread
    # 0.0198 (0.99%) is capped, 0.0202 (1.01%) is scored by the attacks (official: 50, F 0;
    # 1.79174614, F 0.125)
    base = np.linspace(-1, 1, 8)
    retrained = base.copy()
    retrained[3] = 0.2
    f, eps = forgetting_quality(retrained[:, None], (0.2 + 0.0099 * base)[:, None])
    assert f == 0.0 and eps.tolist() == [50.0]
    f, eps = forgetting_quality(retrained[:, None], (0.2 + 0.0101 * base)[:, None])
    assert f == 0.125 and close(eps, [1.79174614])


def test_interval_attack_beats_single_threshold():
    # retrained on both sides of a tight unlearned cluster, one retrained value inside it: an
    # interval holding 7 of the 8 unlearned values and that one retrained value has
    # FPR = FNR = 1/8, eps = log(1 - 1e-5 - 1/8) - log(1/8) (official: 1.9458987713, F 0.125);
    # single thresholds alone reach only 1.3862743378 (official, interval family switched off)
    retrained = column(-3.0, -2.5, -2.0, -1.5, 0.05, 1.5, 2.0, 3.0)
    unlearned = column(-0.35, -0.25, -0.15, -0.05, 0.15, 0.25, 0.35, 0.45)
    f, eps = forgetting_quality(retrained, unlearned)
    assert close(eps, [1.9458987713]) and f == 0.125
    assert eps[0] == pytest.approx(math.log(1 - 1e-5 - 1 / 8) - math.log(1 / 8))
    assert eps[0] > 1.3862743378 + 0.5
    # with no retrained value inside, the interval separates perfectly: eps 50 (official 50;
    # single thresholds alone 1.3862743378)
    retrained[4] = 1.2
    f, eps = forgetting_quality(retrained, unlearned)
    assert eps.tolist() == [50.0] and f == 0.0


def test_integer_values_on_the_grid():
    # values on grid points: ties are classified as in the official code (official: eps
    # 0.6931271553 for both, F 0.5)
    retrained = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 4.0], [3.0, 5.0]])
    unlearned = np.array([[1.0, 0.0], [2.0, 3.0], [3.0, 3.5], [5.0, 6.0]])
    f, eps = forgetting_quality(retrained, unlearned)
    assert close(eps, [0.6931271553, 0.6931271553]) and f == 0.5


def test_identical_values_score_one():
    # the same values on both sides: every attack has TPR = FPR, eps 0 (official on 32 x 3
    # values from default_rng(5): F 1.0, eps 0)
    scores = np.random.default_rng(5).normal(size=(32, 3))
    f, eps = forgetting_quality(scores, scores.copy())
    assert f == 1.0 and (eps == 0.0).all()
    scores = rng.normal(size=(32, 200))
    f, eps = forgetting_quality(scores, scores.copy())
    assert f == 1.0 and (eps == 0.0).all()


def test_same_distribution_large_n():
    # 64 models per side, normal quantiles interleaved between the sides, three locations and
    # scales (official: eps 0.69282675 each, F 0.5): the best of many attacks always finds
    # two positives and one negative in a row, eps ~ ln 2, so this is about as high as two
    # different samples score
    dist, n = NormalDist(), 64
    r0 = np.array([dist.inv_cdf((2 * k + 0.5) / (2 * n)) for k in range(n)])
    u0 = np.array([dist.inv_cdf((2 * k + 1.5) / (2 * n)) for k in range(n)])
    loc_scale = [(0.0, 1.0), (3.0, 0.5), (-2.0, 2.0)]
    retrained = np.stack([loc + sc * r0 for loc, sc in loc_scale], axis=1)
    unlearned = np.stack([loc + sc * u0 for loc, sc in loc_scale], axis=1)
    f, eps = forgetting_quality(retrained, unlearned)
    assert f == 0.5 and close(eps, [0.69282675] * 3)


def test_independent_samples_match_official():
    # independent normal samples from default_rng(0), numpy's PCG64 stream (official:
    # F 0.2140625 for 64 x 20 of the same distribution, 0.14375 for 16 x 10 with the unlearned
    # side shifted by 0.7)
    g = np.random.default_rng(0)
    retrained, unlearned = g.normal(size=(64, 20)), g.normal(size=(64, 20))
    f, eps = forgetting_quality(retrained, unlearned)
    assert f == pytest.approx(0.2140625)
    assert close(eps, SAME_64_EPS)
    retrained, unlearned = g.normal(size=(16, 10)), g.normal(0.7, 1.0, size=(16, 10))
    f, eps = forgetting_quality(retrained, unlearned)
    assert f == pytest.approx(0.14375)
    assert close(eps, SHIFTED_16_EPS)


def test_constant_sides():
    # both sides constant: 0 / 0 is not under 1%, so the attacks decide. Different values are
    # separated perfectly (official: eps 50, F 0)
    f, eps = forgetting_quality(np.full((8, 1), 1.0), np.full((8, 1), 2.0))
    assert eps.tolist() == [50.0] and f == 0.0
    # equal values: no attack survives and the official code stops on its assertion; we read
    # that as nothing telling the sides apart
    f, eps = forgetting_quality(np.full((8, 1), 1.0), np.full((8, 1), 1.0))
    assert eps.tolist() == [0.0] and f == 1.0


def test_batches_agree_with_single_examples(monkeypatch):
    # many examples go through in batches (here of 7) padded to one grid length; each must get
    # what it gets alone
    monkeypatch.setattr(competition, "_CHUNK", 7 * 401 * 16)
    n, e = 8, 120
    retrained = rng.normal(size=(n, e)) * rng.uniform(0.1, 20, size=e)
    unlearned = rng.normal(rng.normal(size=e), rng.uniform(0.01, 3, size=e), size=(n, e))
    unlearned[:, :10] = rng.integers(-3, 4, size=(n, 10))
    retrained[:, :10] = rng.integers(-3, 4, size=(n, 10))
    eps = example_epsilons(retrained, unlearned)
    alone = [sample_epsilon(retrained[:, i], unlearned[:, i]) for i in range(e)]
    assert eps.tolist() == alone


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
    # a perfect separation is inf, clipped to the cap like the official code (was: inf)
    assert f == 0.0 and (eps == 50.0).all()


def test_partial_overlap_is_in_between():
    retrained = rng.normal(0, 1, size=(64, 100))
    unlearned = rng.normal(1.5, 1, size=(64, 100))
    f, _ = forgetting_quality(retrained, unlearned)
    assert 0.0 < f < 0.6
    assert sample_epsilon(retrained[:, 0], unlearned[:, 0]) > 0


def test_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        forgetting_quality(np.zeros((8, 3)), np.zeros((4, 3)))
    # a diverged model's nan confidence counts as told apart
    unlearned = rng.normal(size=(8, 2))
    unlearned[0, 1] = np.nan
    _, eps = forgetting_quality(rng.normal(size=(8, 2)), unlearned)
    assert eps[1] == 50.0


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
    assert set(rows) == {"influence", "negative_gradient", "retrain (half vs half)"}
    del rows["retrain (half vs half)"]  # the KLoM floor: no F (tests/test_klom.py)
    for row in rows.values():
        assert 0.0 <= row["F"] <= 1.0 and row["models"] == 2
        assert row["final_score"] <= row["F"] * (row["RA"] / row["RA_retrain"]) + 1e-9
    bad = run_cli("audit", "--methods", "influense", *TINY)
    assert bad.returncode == 2 and "Did you mean 'influence'?" in bad.stderr


def test_audit_unlearns_from_one_original_unless_told_otherwise(run_cli, tmp_path, monkeypatch):
    """The default protocol is the official one: every unlearned model starts from the same
    original weights (method seeds 0..N-1); `--sampling per_original` starts model i from
    original i. The hashes are taken of the weights each method call was actually handed."""
    import hashlib
    import json

    import unlearn_cli.unlearning

    from .conftest import TINY

    started: list[tuple[int, str]] = []
    real = unlearn_cli.unlearning.run_method

    def spy(name, model, split, ctx, opts=None):
        if name != "retrain":  # the retrained side trains from scratch
            blob = b"".join(t.detach().cpu().numpy().tobytes() for t in model.state_dict().values())
            started.append((ctx.seed, hashlib.sha256(blob).hexdigest()))
        return real(name, model, split, ctx, opts)

    monkeypatch.setattr(unlearn_cli.unlearning, "run_method", spy)

    def audit(*sampling: str) -> tuple[list[tuple[int, str]], dict]:
        started.clear()
        run_cli("audit", "--methods", "negative_gradient", "--models", "2", *sampling, *TINY,
                "model.train.epochs=2", check=True)  # fmt: skip
        folder = max((tmp_path / "outputs" / "audits").iterdir())
        return list(started), json.loads((folder / "audit.json").read_text())

    one, written = audit()
    assert [seed for seed, _ in one] == [0, 1] and len({h for _, h in one}) == 1
    assert written["sampling"] == "one_original"
    recorded = written["started_from"]["negative_gradient"]
    assert [r["original_seed"] for r in recorded] == [0, 0]
    assert len({r["original_sha256"] for r in recorded}) == 1

    per, written = audit("--sampling", "per_original")
    assert [seed for seed, _ in per] == [0, 1] and len({h for _, h in per}) == 2
    assert per[0] == one[0]  # original 0 is the one every default unlearning started from
    recorded = written["started_from"]["negative_gradient"]
    assert [r["original_seed"] for r in recorded] == [0, 1]
    assert len({r["original_sha256"] for r in recorded}) == 2

    bad = run_cli("audit", "--sampling", "per_orignal", *TINY)
    assert bad.returncode == 2 and "Did you mean 'per_original'?" in bad.stderr
