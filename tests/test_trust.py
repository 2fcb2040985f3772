"""Figures a reviewer can trust (issue 12): user data keyed by content, no method looks at the
test set, counted costs, the noise floor, and the warm-up before the timer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from unlearn_cli.run import run_experiment
from unlearn_cli.validate import validate_config

from .conftest import TINY, write_image_folder

QUIET = ["evaluation.plots=false", "evaluation.noise_floor=false"]


def test_an_edited_image_folder_is_not_served_old_models(make_cfg, tmp_path):
    """Same file names, other pixels: the cache must train new original and retrained models."""
    root = write_image_folder(tmp_path / "animals", broken=False)
    cfg = make_cfg("dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=8",
                   "model=mlp", "model.train.epochs=2", "device=cpu", "forget_class=cat",
                   "method=retrain", *QUIET)  # fmt: skip
    first = run_experiment(validate_config(cfg), tmp_path / "a")["method_metrics"]
    again = run_experiment(validate_config(cfg), tmp_path / "b")["method_metrics"]
    assert not first["original_hit"] and again["original_hit"] and again["retrain_hit"]
    for image in sorted(root.rglob("*.png"))[::2]:  # rewrite half the images in place
        pixels = np.asarray(__import__("PIL.Image").Image.open(image)).copy()
        __import__("PIL.Image").Image.fromarray(255 - pixels).save(image)
    edited = run_experiment(validate_config(cfg), tmp_path / "c")["method_metrics"]
    assert not edited["original_hit"] and not edited["retrain_hit"]


def test_an_edited_csv_is_not_served_old_models(make_cfg, tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(80, 3)), columns=["a", "b", "c"])
    frame["label"] = np.where(frame["a"] > 0, "yes", "no")
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    cfg = make_cfg("dataset=tabular", "dataset.name=csv", f"dataset.path={path}",
                   "model=logistic", "forget_fraction=0.1", "device=cpu", "method=retrain",
                   *QUIET)  # fmt: skip
    assert not run_experiment(validate_config(cfg), tmp_path / "a")["method_metrics"][
        "original_hit"
    ]
    assert run_experiment(validate_config(cfg), tmp_path / "b")["method_metrics"]["original_hit"]
    frame["b"] = frame["b"] * 3  # same file name, same shape, other numbers
    frame.to_csv(path, index=False)
    assert not run_experiment(validate_config(cfg), tmp_path / "c")["method_metrics"][
        "original_hit"
    ]


def without_test_images(split):
    """The same split with no test images at all: a method that reads them crashes."""
    import dataclasses

    return dataclasses.replace(split, data=dataclasses.replace(split.data, x_test=None))


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("negative_gradient", []),  # its stop rule (forget_target) needs unseen-data accuracy
        ("adversarial", ["method.reference=heldout"]),  # its "real" samples are unseen images
        ("scrub", ["method.rewind=true"]),  # SCRUB+R picks the round nearest the target
    ],
)
def test_no_method_looks_at_the_test_set(make_cfg, tmp_path, method, options):
    """Issue 12 bug 2: the test set is for evaluation only. With the test images removed, the
    old code crashed (forget_target read split.test, adversarial data.x_test); methods now use
    the validation split."""
    from unlearn_cli.data import load_dataset
    from unlearn_cli.data.spec import split_from_config
    from unlearn_cli.methods import UnlearnContext, method_options, run_method
    from unlearn_cli.methods.common import is_finite_model
    from unlearn_cli.models import build_model
    from unlearn_cli.training import train_classifier

    cfg = make_cfg(*TINY, "forget_fraction=0.2", f"method={method}", *options)
    data = load_dataset(validate_config(cfg).dataset, tmp_path)
    split = split_from_config(data, validate_config(cfg))
    assert len(split.validation_idx) > 0
    assert not set(split.validation_idx) & set(split.trainable_idx)
    model = build_model(cfg.model, data.input_shape, data.num_classes, 0)
    train_classifier(model, data.x_train, data.y_train, cfg.model.train, torch.device("cpu"), 0,
                     "original", rows=split.trainable_idx)  # fmt: skip
    ctx = UnlearnContext(cfg.model.train, torch.device("cpu"), 0, lambda: None)
    out = run_method(method, model, without_test_images(split), ctx, method_options(cfg.method))
    assert is_finite_model(out)
    for key in ("forget_target",):
        if key in ctx.metrics:
            assert math.isfinite(ctx.metrics[key]), ctx.metrics


def test_validation_split_is_recorded_and_never_trained_on(make_cfg, tmp_path):
    data = run_experiment(
        validate_config(make_cfg(*TINY, "method=retrain", "forget_fraction=0.2", *QUIET)),
        tmp_path / "run",
    )
    split = data["split"]
    assert split["num_validation"] > 0
    assert split["num_forget"] + split["num_retain"] + split["num_validation"] == 192


def test_costs_are_counted_sample_passes(make_cfg, tmp_path):
    """Retrain's count is exactly epochs x retain samples gradients; a method's count is what
    its loop ran, and cost_ratio is their ratio of forward-pass equivalents."""
    cfg = make_cfg(*TINY, "method=finetune", "method.retain_epochs=1", *QUIET)
    data = run_experiment(validate_config(cfg), tmp_path / "run")
    retrain, unlearned = data["models"]["retrain"], data["models"]["unlearned"]
    assert retrain["grad_samples"] == 10 * data["split"]["num_retain"]  # model.train.epochs=10
    # one pass over the retain set in batches of 128, plus nothing else that runs the network
    assert unlearned["grad_samples"] == data["split"]["num_retain"]
    assert unlearned["cost_units"] == 3 * unlearned["grad_samples"] + unlearned["forward_samples"]
    assert unlearned["cost_ratio"] == pytest.approx(retrain["cost_units"] / unlearned["cost_units"])
    assert retrain["cost_ratio"] == pytest.approx(1.0)


def test_sisa_setup_cost_is_its_own_figure(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "method=sisa", "method.shards=2", "method.slices=2",
                   "method.epochs_per_slice=1", *QUIET)  # fmt: skip
    data = run_experiment(validate_config(cfg), tmp_path / "run")
    setup = data["method_metrics"]["setup_cost"]
    assert setup["grad_samples"] > 0 and data["method_metrics"]["setup_seconds"] > 0
    # the deletion retrained both shards from a slice: less than the set-up's full training
    assert data["models"]["unlearned"]["grad_samples"] <= setup["grad_samples"]


def test_the_noise_floor_is_a_second_retrain(make_cfg, tmp_path, capsys):
    cfg = make_cfg(*TINY, "method=retrain", "forget_fraction=0.2", "evaluation.plots=false",
                   "evaluation.noise_floor=true")  # fmt: skip
    data = run_experiment(validate_config(cfg), tmp_path / "run")
    floor = data["models"]["retrain_other_seed"]
    assert floor["avg_gap"] > 0  # two exact retrainings of different seeds differ
    assert math.isnan(floor["time_s"])
    caption = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "noise floor (retrain, other seed)" in caption
    # the verdict and the cost in plain words; method=retrain is its own reference
    assert "the unlearned model is within it, at retraining's own cost (cost_ratio 1.00)" in caption


def test_the_caption_gives_a_methods_cost_ratio_in_plain_words(make_cfg, tmp_path, capsys):
    """Two retain epochs against retrain's ten, no other pass of the network: a fifth of
    retraining's counted cost, said in the caption with the run's own cost_ratio."""
    cfg = make_cfg(*TINY, "method=finetune", "method.retain_epochs=2", "forget_fraction=0.2",
                   "evaluation.noise_floor=true")  # fmt: skip
    ratio = run_experiment(validate_config(cfg), tmp_path / "run")["models"]["unlearned"][
        "cost_ratio"
    ]
    assert ratio == pytest.approx(5.0)
    caption = " ".join(capsys.readouterr().out.split())
    assert "at 1/5 of retraining's cost (cost_ratio 5.00)" in caption


def test_libraries_are_warmed_before_the_timer(make_cfg, tmp_path, monkeypatch):
    """torch.func's first call (torch._dynamo's import, ~2 s) must not be timed as unlearning."""
    import unlearn_cli.unlearning as run

    order = []
    real_warm, real_method = run.warm_up, run.run_method
    monkeypatch.setattr(run, "warm_up", lambda *a: (order.append("warm"), real_warm(*a))[1])

    def spy(name, *args):
        order.append(name)
        return real_method(name, *args)

    monkeypatch.setattr(run, "run_method", spy)
    run_experiment(validate_config(make_cfg(*TINY, "method=influence", *QUIET)), tmp_path / "run")
    assert order.index("warm") < order.index("influence")


def test_train_limit_is_a_fixed_stratified_subset(make_cfg, tmp_path):
    """The memorising benchmark variant (sweep=bench_memorise) trains on 2,000 images."""
    from unlearn_cli.data import load_dataset

    full = load_dataset(validate_config(make_cfg()).dataset, tmp_path)
    small = load_dataset(validate_config(make_cfg("dataset.train_limit=2000")).dataset, tmp_path)
    assert small.num_train == 2000 and torch.equal(small.y_test, full.y_test)  # same test set
    assert torch.bincount(small.y_train).tolist() == [200] * 10
    assert set(small.ids()) < set(full.ids())
    again = load_dataset(validate_config(make_cfg("dataset.train_limit=2000")).dataset, tmp_path)
    assert again.ids() == small.ids()


def test_benchmark_variants_are_reported_apart(make_cfg, tmp_path):
    """The memorising variant's rows must not merge with the main benchmark's in a report."""
    from unlearn_cli.record import variant_label

    main, memorise = make_cfg(), make_cfg("sweep=bench_memorise")
    main, memorise = validate_config(main), validate_config(memorise)
    assert variant_label(main.dataset) == "animal_mnist"
    assert variant_label(memorise.dataset) == "animal_mnist[train_limit=2000]"
    assert variant_label(main.model) == "cnn"
    assert variant_label(memorise.model) == "cnn[train.epochs=40,train.weight_decay=0.0]"
