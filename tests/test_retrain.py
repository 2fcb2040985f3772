"""retrain and the whole run: exact unlearning never sees a forget sample; outputs are complete."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from unlearn_cli.data import load_dataset, make_split
from unlearn_cli.device import resolve_device
from unlearn_cli.errors import UserError
from unlearn_cli.run import run_experiment
from unlearn_cli.validate import validate_config

from .conftest import TINY, min_distance, retrain_inputs

EXACT = "donot_use_mm_for_euclid_dist"


def test_retrain_never_sees_a_forget_sample(make_cfg, tmp_path):
    cfg = make_cfg(*TINY)
    data = load_dataset(validate_config(cfg).dataset, tmp_path)
    split = make_split(data, None, 0.2, None, seed=0)
    inputs, ctx = retrain_inputs(cfg, data, split)
    assert min_distance(split.forget[0], inputs).min() > 1e-3  # no forget image was fed in
    assert min_distance(split.retain[0], inputs).max() < 1e-5  # every retain image was
    assert ctx.metrics["train_seconds"] > 0


def test_run_class_forgetting_end_to_end(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "method=retrain")
    result = run_experiment(validate_config(cfg), tmp_path / "run")
    models = result["models"]
    assert result["status"] == "completed"
    assert models["original"]["forget_acc"] > 90  # the base model knew the class
    assert models["retrain"]["forget_acc"] == 0.0  # the retrained model never learned it
    assert models["retrain"]["forget_test_acc"] == 0.0
    assert abs(models["retrain"]["TA"] - models["original"]["TA"]) <= 5
    assert models["unlearned"] == models["retrain"]  # method=retrain *is* the reference
    assert models["original"]["avg_gap"] > 20
    assert result["split"]["num_forget"] == 46 and result["split"]["forget_classes"] == ["class1"]
    assert not result["method_metrics"]["original_hit"]
    # closeness to the retrained model: retrain is itself, the original is the unit of distance
    assert models["retrain"]["agree_test"] == 100.0 and models["retrain"]["weight_distance"] == 0
    assert models["original"]["weight_distance"] == pytest.approx(1.0)
    per_class = result["per_class_test_acc"]
    assert per_class["retrain"]["class1"] == 0.0 and per_class["original"]["class1"] > 90

    run_dir = tmp_path / "run"
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["models"]["retrain"]["time_s"] > 0
    table = pd.read_csv(run_dir / "metrics.csv")
    assert table["model"].tolist() == ["original", "retrain", "unlearned"]
    assert table.loc[1, "forget_acc"] == 0.0
    state = load_file(str(run_dir / "checkpoints" / "unlearned.safetensors"))
    assert "head.weight" in state

    again = run_experiment(
        validate_config(cfg), tmp_path / "run2"
    )  # same config: both models from the cache
    assert again["method_metrics"]["original_hit"] and again["method_metrics"]["retrain_hit"]
    for role in ("original", "retrain", "unlearned"):  # deterministic on CPU, same seed
        for metric in ("UA", "RA", "TA", "MIA", "mia_auc", "avg_gap"):
            assert again["models"][role][metric] == result["models"][role][metric]
    assert again["models"]["retrain"]["time_s"] == result["models"]["retrain"]["time_s"]


def test_random_forgetting_run(make_cfg, tmp_path):
    result = run_experiment(
        validate_config(make_cfg(*TINY, "method=retrain", "forget_fraction=0.1", "seed=3")),
        tmp_path / "r",
    )
    split = result["split"]
    # 5% of the 192 training images are held out for validation; 10% of the other 182 go
    assert split["scenario"] == "random" and split["num_forget"] == 18
    assert math.isnan(result["models"]["unlearned"]["forget_test_acc"])  # no forgotten class
    assert 0.0 <= result["models"]["retrain"]["mia_auc"] <= 1.0


def test_cuda_without_cuda_is_a_user_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu")
