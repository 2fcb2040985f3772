"""The shadow-model likelihood-ratio attack (evaluation=lira)."""

from __future__ import annotations

import numpy as np

from unlearn_cli.evaluation.lira import lira_member_pct, shadow_membership
from unlearn_cli.run import run_experiment

from .conftest import TINY

rng = np.random.default_rng(0)


def test_shadow_membership_is_half_and_seeded():
    members = shadow_membership(100, 6, seed=3)
    assert members.shape == (6, 100) and (members.sum(axis=1) == 50).all()
    assert np.array_equal(members, shadow_membership(100, 6, seed=3))


def test_likelihood_ratio_on_hand_made_gaussians():
    n, k = 300, 16
    trained_on = rng.random((k, n)) < 0.5
    mu_in, mu_out = rng.normal(4, 1, n), rng.normal(0, 1, n)  # per-example means
    shadow_phi = np.where(trained_on, mu_in, mu_out) + rng.normal(0, 0.5, (k, n))
    remembered = mu_in + rng.normal(0, 0.5, n)  # a model that trained on the samples
    forgotten = mu_out + rng.normal(0, 0.5, n)  # one that never saw them
    assert lira_member_pct(remembered, shadow_phi, trained_on) > 95
    assert lira_member_pct(forgotten, shadow_phi, trained_on) < 5


def test_lira_run_separates_original_from_retrain(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "evaluation=lira", "evaluation.lira.shadow_models=4",
                   "dataset.noise=2.0", "model.train.epochs=30", "forget_fraction=0.2",
                   "evaluation.plots=false")  # fmt: skip
    rows = run_experiment(cfg, tmp_path / "run")["models"]
    assert rows["original"]["lira_member"] > rows["retrain"]["lira_member"]
    assert 0 <= rows["unlearned"]["lira_member"] <= 100


def test_ulira_unlearns_the_shadows_with_the_runs_method(make_cfg, tmp_path, monkeypatch):
    """Issue 12 bug 5: U-LiRA's "in" Gaussian comes from shadows that trained on x *and then ran
    the method* on the forget samples they held; plain LiRA never calls the method."""
    import unlearn_cli.methods as methods

    calls = []
    real = methods.run_method

    def spy(name, model, split, ctx, opts=None):
        calls.append((name, split.forget_idx.copy(), split.retain_idx.copy()))
        return real(name, model, split, ctx, opts)

    monkeypatch.setattr(methods, "run_method", spy)
    base = [*TINY, "evaluation.lira.shadow_models=4", "forget_fraction=0.2",
            "evaluation.plots=false", "evaluation.noise_floor=false", "method=finetune",
            "method.retain_epochs=1"]  # fmt: skip
    run_experiment(make_cfg(*base, "evaluation=lira"), tmp_path / "lira")
    assert not [c for c in calls if c[0] == "finetune"]  # the run's own call goes elsewhere
    data = run_experiment(make_cfg(*base, "evaluation=ulira"), tmp_path / "ulira")
    shadow_calls = [c for c in calls if c[0] == "finetune"]
    assert len(shadow_calls) == 4
    forget = set(data["split"]["forget_ids"]) if "forget_ids" in data["split"] else None
    for _, forget_idx, retain_idx in shadow_calls:
        assert len(forget_idx) and not set(forget_idx) & set(retain_idx)
    assert forget is None or len(forget) >= max(len(c[1]) for c in shadow_calls)
    assert 0 <= data["method_metrics"]["ulira_acc"] <= 100
    assert 0 <= data["models"]["unlearned"]["ulira_member"] <= 100
