"""Corrective unlearning: manipulated originals, partial requests, the two references, and
bad corruption options refused before any training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import TINY
from unlearn_cli.corruption.manipulate import most_confused_pair
from unlearn_cli.run import run_experiment
from unlearn_cli.validate import validate_config

DIGITS = ["dataset=digits", *TINY[1:], "model.train.epochs=6", "evaluation.representation=false"]
POISON = [*DIGITS, "variant=poison", "corruption.share=0.05"]


def run(make_cfg, tmp_path, *overrides, name="run"):
    return run_experiment(validate_config(make_cfg(*overrides)), tmp_path / name)


def test_poison_is_learnt_and_only_the_clean_retraining_removes_it(make_cfg, tmp_path):
    data = run(make_cfg, tmp_path, *POISON, "method=retrain")
    models = data["models"]
    chance = 100.0 / 10 * 2  # digits: 10 classes; twice chance as the bound
    assert models["original"]["attack_success"] > 80  # the trigger works
    assert models["retrain_clean"]["attack_success"] < chance  # the model the user wanted
    assert models["retrain_clean"]["gap_clean"] == 0.0
    # half identified: the exact unlearning of the request keeps much of the poison
    assert models["retrain"]["attack_success"] > models["retrain_clean"]["attack_success"] + 20
    truth = data["corruption"]
    assert truth["num_identified"] + truth["num_left"] == truth["num_manipulated"]
    assert data["split"]["num_forget"] == truth["num_identified"]


def test_a_clean_original_is_not_fooled_by_the_trigger(make_cfg, tmp_path):
    """The patch alone does not move a clean model to the target: the attack is the poison."""
    from unlearn_cli.corruption.manipulate import Manipulation
    from unlearn_cli.data import load_dataset
    from unlearn_cli.run_models import Workshop, the_original

    config = validate_config(make_cfg(*DIGITS, "forget_fraction=0.1"))
    data = load_dataset(config.dataset, config.run.cache_dir)
    from unlearn_cli.data.spec import split_from_config

    split = split_from_config(data, config)
    original, _ = the_original(Workshop(config, split, torch.device("cpu")), None)
    trigger = Manipulation("poison", np.empty(0, int), np.empty(0, int), np.empty(0, int), 0)
    others = data.y_test != 0
    patched = trigger.patched(data.x_test[others], data)
    success = (original(patched).argmax(dim=1) == 0).double().mean().item() * 100
    assert success < 20


def test_the_manipulated_rows_left_in_the_retain_set_are_the_unidentified_ones(make_cfg):
    from unlearn_cli.corruption.request import corrective_split
    from unlearn_cli.data import load_dataset

    config = validate_config(make_cfg(*POISON, "corruption.identified=0.3"))
    data = load_dataset(config.dataset, config.run.cache_dir)
    split = corrective_split(config, data, torch.device("cpu"))
    truth = split.corruption
    assert np.array_equal(split.forget_idx, truth.identified)
    assert set(truth.left) == set(truth.rows) - set(truth.identified)
    assert set(truth.left) <= set(split.retain_idx)
    assert not np.intersect1d(truth.rows, split.validation_idx).size
    assert (split.data.y_train[torch.as_tensor(truth.rows)] == truth.target).all()
    assert len(truth.identified) == round(0.3 * len(truth.rows))
    # the same manipulated rows whatever share is identified: one original for every value
    other = corrective_split(validate_config(make_cfg(*POISON, "corruption.identified=0.7")),
                             data, torch.device("cpu"))  # fmt: skip
    assert np.array_equal(other.corruption.rows, truth.rows)
    assert other.data.fingerprint == split.data.fingerprint


def test_all_identified_makes_the_two_references_one_model(make_cfg, tmp_path):
    data = run(make_cfg, tmp_path, *POISON, "corruption.identified=1.0", "method=retrain")
    models = data["models"]
    for metric in ("attack_success", "acc_corr", "acc_retain", "TA"):
        assert models["retrain"][metric] == models["retrain_clean"][metric]
    assert np.isnan(models["retrain"]["left_manip_acc"])  # nothing left in the retain set


def test_the_original_is_shared_across_methods_and_identified(make_cfg, tmp_path):
    run(make_cfg, tmp_path, *POISON, "method=finetune", name="a")
    data = run(make_cfg, tmp_path, *POISON, "method=retrain", "corruption.identified=0.25",
               name="b")  # fmt: skip
    assert data["method_metrics"]["original_hit"] is True


def test_label_confusion_swaps_two_classes(make_cfg, tmp_path):
    data = run(make_cfg, tmp_path, *DIGITS, "variant=confusion", "corruption.share=0.05",
               "corruption.classes=[3,8]", "method=retrain")  # fmt: skip
    truth = data["corruption"]
    assert truth["classes"] == ["3", "8"] and truth["target"] is None
    assert "attack_success" not in data["models"]["original"]
    assert data["models"]["retrain_clean"]["gap_clean"] == 0.0


def test_auto_picks_the_pair_the_model_confuses_most():
    logits = torch.full((6, 4), -5.0)
    labels = torch.tensor([0, 1, 2, 2, 3, 3])
    predicted = [0, 1, 3, 3, 2, 3]  # 2 <-> 3 mixed three times
    logits[torch.arange(6), torch.tensor(predicted)] = 5.0
    assert most_confused_pair(logits, labels, 4) == (2, 3)


BAD = [
    (["corruption.identified=0"], "corruption.identified"),
    (["corruption.identified=1.5"], "corruption.identified"),
    (["corruption.target=giraffe"], "unknown class 'giraffe'"),
    (["corruption.patch=8"], "corruption.patch=8 is not smaller than the 8x8 images"),
    (["dataset=synthetic"], "manipulates images; synthetic is a table"),
    (["forget_class=3"], "makes its own request"),
    (["stream=random4"], "corruption applies to a single request"),
    (["corruption.kind=typo"], "corruption.kind"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_corruption_options_are_refused_before_any_training(run_cli, tmp_path, overrides,
                                                               message):  # fmt: skip
    done = run_cli("run", *POISON, *overrides)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "cache").glob("models/*"))


def fake_corrective_run(folder, kind, identified, seed, method, acc_corr):
    """A finished corrective run folder as the benchmark's aggregator reads it."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(
        f"corruption:\n  identified: {identified}\n  share: 0.01\n"
    )
    models = {role: {"acc_corr": value, "attack_success": 100 - value, "acc_retain": 90.0,
                     "left_manip_acc": 50.0, "gap_clean": 95 - value, "val_acc": 90.0,
                     "avg_gap": 1.0}
              for role, value in (("original", 20.0), ("retrain", 30.0 + 60 * identified),
                                  ("retrain_clean", 95.0), ("unlearned", acc_corr))}  # fmt: skip
    data = {"status": "completed", "corruption": {"kind": kind},
            "config": {"seed": seed, "method": method}, "models": models}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(data))


def test_the_corrective_benchmark_tables_each_reference_once_per_cell(tmp_path):
    from unlearn_cli.corruption import bench

    sweep = tmp_path / "sweep"
    for i, (identified, seed, method, acc) in enumerate([
        (0.1, 10, "ssd", 80.0), (0.1, 11, "ssd", 90.0), (1.0, 10, "ssd", 95.0),
        (0.1, 10, "retrain", 36.0), (1.0, 10, "retrain", 90.0),
    ]):  # fmt: skip
        fake_corrective_run(sweep / str(i), "poison", identified, seed, method, acc)
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n")
    bench.main([str(sweep), "--markdown", str(markdown), "--csv", str(tmp_path / "c.csv"),
                "--plots", str(tmp_path / "plots")])  # fmt: skip
    text = markdown.read_text()
    assert (tmp_path / "plots" / "corrective-poison-0.01.png").is_file()
    assert "![poison-0.01](plots/corrective-poison-0.01.png)" in text
    assert "### poison, 1%: BadNets" in text
    # The method `retrain` and the reference of the same name stay apart; the references are
    # counted once per (identified, seed), however many methods ran beside them.
    assert "| ssd | 85.0 ± 7.1 | 95.0 |" in text
    assert "| retrain | 36.0 | 90.0 |" in text
    assert "| **retrain without the identified** | 36.0 ± 0.0 | 90.0 |" in text
    assert "| **retrain without all manipulated** | 95.0 ± 0.0 | 95.0 |" in text
