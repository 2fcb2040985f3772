"""rum against ground truth on tiny synthetic data: mislabelled forget samples, which the original
can only fit by memorising them, form the most memorised group; each group goes to its method,
least memorised first; the proxy's pass is counted; the test set is never read."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from unlearn_cli.cost import attach_counter, counting
from unlearn_cli.data import load_dataset, make_split
from unlearn_cli.errors import UserError
from unlearn_cli.inference import accuracy, predict_logits
from unlearn_cli.methods import UnlearnContext, method_options, run_method
from unlearn_cli.methods import rum as rum_module
from unlearn_cli.methods.rum import memorisation_groups
from unlearn_cli.models import build_model
from unlearn_cli.training import train_classifier
from unlearn_cli.validate import validate_config

from .conftest import TINY

CPU = torch.device("cpu")
DATA = [*TINY, "dataset.samples_per_class=100", "model.train.epochs=40"]
MISLABELLED = 6


def acc(model, x, y) -> float:
    return accuracy(predict_logits(model, x, CPU, 1024), y)


@pytest.fixture(scope="module")
def memorising(tmp_path_factory):
    """An original trained on a random 20% forget set of which a few samples carry a wrong
    label: it fits those only by memorising them (a retrained model predicts their true class)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        cfg = compose("config", overrides=DATA)
    data = load_dataset(validate_config(cfg).dataset, tmp_path_factory.mktemp("cache"))
    split = make_split(data, None, 0.2, "class1", seed=0)
    flipped = split.forget_idx[:: len(split.forget_idx) // MISLABELLED][:MISLABELLED]
    y = data.y_train.clone()
    y[flipped] = (y[flipped] + 1) % data.num_classes
    split = dataclasses.replace(split, data=dataclasses.replace(data, y_train=y))
    model = build_model(cfg.model, data.input_shape, data.num_classes, seed=0)
    train_classifier(model, split.data.x_train, y, cfg.model.train, CPU, 0, "original",
                     rows=split.trainable_idx)  # fmt: skip
    assert acc(model, *split.forget) == 100, "the original must fit (memorise) every forget sample"
    return cfg, split, model, flipped


def context(cfg, split) -> UnlearnContext:
    data = split.data
    return UnlearnContext(cfg.model.train, CPU, 0, lambda: build_model(
        cfg.model, data.input_shape, data.num_classes, seed=0))  # fmt: skip


def options(make_cfg, *overrides):
    return method_options(make_cfg(*DATA, "method=rum", *overrides).method)


@pytest.fixture
def calls(monkeypatch):
    """Every group method rum runs: (name, forget ids, retain ids), in order."""
    seen = []

    def spy(name, model, split, ctx, opts=None):
        seen.append((name, split.forget_idx.copy(), split.retain_idx.copy()))
        return run_method(name, model, split, ctx, opts)

    monkeypatch.setattr(rum_module, "run_method", spy)
    return seen


def test_groups_are_cut_from_least_to_most_memorised():
    margin = np.array([5.0, -1.0, 3.0, 0.5, 9.0, 2.0, 7.0, 1.0, 4.0, 6.0])
    groups = memorisation_groups(margin, [0.5, 0.3, 0.2])
    assert [len(g) for g in groups] == [5, 3, 2]
    assert [sorted(margin[g].tolist()) for g in groups] == [[4, 5, 6, 7, 9], [1, 2, 3], [-1, 0.5]]
    assert [len(g) for g in memorisation_groups(margin, [0.96, 0.04])] == [10, 0]


def test_each_group_goes_to_its_method_most_memorised_last(memorising, make_cfg, calls):
    cfg, split, original, flipped = memorising
    opts = options(make_cfg, "method.shares=[0.5,0.3,0.2]", "method.methods=[none,finetune,salun]")
    ctx = context(cfg, split)
    run_method("rum", copy.deepcopy(original), split, ctx, opts)
    assert [name for name, _, _ in calls] == ["finetune", "salun"]  # `none` runs nothing
    groups = ctx.metrics["groups"]
    assert [g["size"] for g in groups] == [round(0.5 * len(split.forget_idx)),
                                          round(0.3 * len(split.forget_idx)),
                                          round(0.2 * len(split.forget_idx))]  # fmt: skip
    for lower, higher in zip(groups, groups[1:], strict=False):
        assert lower["margin_min"] >= higher["margin_max"]  # ordered by the proxy
    (_, middle, _), (_, last, _) = calls
    assert set(flipped) <= set(last), "the mislabelled (memorised) samples are the last group"
    assert len(set(middle) | set(last)) == groups[1]["size"] + groups[2]["size"]
    for _, _, retain in calls:  # every step keeps the whole retain set, and no forget sample
        assert np.array_equal(retain, split.retain_idx)


def test_memorised_samples_are_forgotten_and_the_rest_is_kept(memorising, make_cfg):
    """As retraining would: it predicts the mislabelled samples' true class (not their label)
    and still recognises the other forget samples, which it generalises to."""
    cfg, split, original, flipped = memorising
    opts = options(make_cfg, "method.shares=[0.9,0.1]", "method.methods=[none,salun]",
                   "method.salun.forget_epochs=20", "method.salun.lr=0.005")  # fmt: skip
    model = run_method("rum", copy.deepcopy(original), split, context(cfg, split), opts)
    x, y = split.data.x_train, split.data.y_train
    clean = np.setdiff1d(split.forget_idx, flipped)
    assert acc(model, x[flipped], y[flipped]) <= 50
    assert acc(model, x[clean], y[clean]) >= 90
    assert acc(model, *split.retain) >= acc(original, *split.retain) - 5
    assert acc(model, *split.validation) >= acc(original, *split.validation) - 10


def test_the_defaults_from_a_memorising_original(memorising, make_cfg):
    """The most memorised half goes to influence, which takes its memorising-original default
    (scale=search) and spends at most rum's 1 point of retain accuracy."""
    cfg, split, original, flipped = memorising
    ctx = context(cfg, split)
    ctx.metrics["original_memorises"] = True  # as the run finds before the method starts
    model = run_method("rum", copy.deepcopy(original), split, ctx, options(make_cfg))
    last = ctx.metrics["groups"][-1]
    assert last["method"] == "influence" and last["metrics"]["options"]["scale"] == "search"
    x, y = split.data.x_train, split.data.y_train
    assert acc(model, x[flipped], y[flipped]) < 100
    assert acc(model, *split.retain) >= acc(original, *split.retain) - 1


def test_the_proxy_pass_is_counted(memorising, make_cfg):
    cfg, split, original, _ = memorising
    opts = options(make_cfg, "method.methods=[none,none]")
    model = attach_counter(copy.deepcopy(original))  # as every model of a run is
    with counting() as cost:
        model = run_method("rum", model, split, context(cfg, split), opts)
    assert cost.forward_samples == len(split.forget_idx) and cost.grad_samples == 0
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), original.state_dict().values(), strict=True)
    )


def test_the_test_set_is_never_read(memorising, make_cfg):
    cfg, split, original, _ = memorising
    blind = dataclasses.replace(split, data=dataclasses.replace(split.data, x_test=None,
                                                                y_test=None))  # fmt: skip
    for methods in ("[none,influence]", "[finetune,salun]"):
        opts = options(make_cfg, f"method.methods={methods}")
        model = run_method("rum", copy.deepcopy(original), blind, context(cfg, blind), opts)
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_class_is_one_group_for_the_last_method(make_cfg, tmp_path, calls):
    cfg = make_cfg(*TINY, "method=rum", "method.methods=[finetune,salun]")
    data = load_dataset(validate_config(cfg).dataset, tmp_path)
    split = make_split(data, None, None, "class1", seed=0)
    model = build_model(cfg.model, data.input_shape, data.num_classes, seed=0)
    ctx = context(cfg, split)
    run_method("rum", model, split, ctx, method_options(cfg.method))
    assert [(name, len(ids)) for name, ids, _ in calls] == [("salun", len(split.forget_idx))]
    assert ctx.metrics["groups"][0]["metrics"]["options"]["forget_epochs"] == 3  # class default


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.shares=[0.5,0.4]"], "method.shares must be shares that add up to 1"),
        (["method.methods=[none]"], "method.methods must be one method per share (2)"),
        (["method.methods=[none,retrain]"], "method.methods must be a list of none, finetune"),
        (["method.influence.retain_drop=-1"], "method.influence.retain_drop must be a number"),
    ],
)
def test_bad_groups_are_one_line_errors(make_cfg, overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        options(make_cfg, *overrides)


def test_every_group_method_has_its_options_block():
    from typing import get_args

    from unlearn_cli.methods import options_type
    from unlearn_cli.methods.rum import GroupMethod, RumOptions

    for name in get_args(GroupMethod):
        if name != "none":
            assert isinstance(getattr(RumOptions(), name), options_type(name)), name


def test_a_run_records_its_groups_and_counts_the_proxy(make_cfg, tmp_path):
    from unlearn_cli.run import run_experiment

    cfg = make_cfg(*TINY, "forget_fraction=0.2", "method=rum", "method.methods=[none,finetune]")
    data = run_experiment(validate_config(cfg), tmp_path / "run")
    groups, split = data["method_metrics"]["groups"], data["split"]
    assert data["status"] == "completed"
    assert [g["method"] for g in groups] == ["none", "finetune"]
    assert sum(g["size"] for g in groups) == split["num_forget"]
    # the proxy's pass, then finetune's one retain pass (rum.yaml's finetune block)
    unlearned = data["models"]["unlearned"]
    assert unlearned["forward_samples"] == split["num_forget"]
    assert unlearned["grad_samples"] == split["num_retain"]
