"""Reliability: numerical faults end as `status: diverged`, interruptions leave a consistent
cache and an `interrupted` run that a rerun resumes, and the same config and seed give the same
metrics."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unlearn_cli.methods import METHODS
from unlearn_cli.methods.finetune import FinetuneOptions

from .conftest import TINY, unlearn_executable


def only_run(root: Path) -> Path:
    (run,) = (root / "outputs" / "runs").iterdir()
    return run


def cache_entries(root: Path) -> list[str]:
    models = root / "outputs" / "cache" / "models"
    return (
        sorted(p.name for p in models.iterdir() if not p.name.startswith("."))
        if models.exists()
        else []
    )


def test_diverging_base_training_is_status_diverged_and_caches_nothing(unlearn_here, tmp_path):
    code, _, err = unlearn_here("run", *TINY, "model.train.optimizer=sgd", "model.train.lr=1e9")
    assert code == 3
    assert err.strip().splitlines()[-1].startswith("unlearn: error: training the original model "
                                                   "diverged")  # fmt: skip
    metrics = json.loads((only_run(tmp_path) / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "models" not in metrics  # no table of NaNs
    assert cache_entries(tmp_path) == []  # a diverged model is never cached


def test_diverging_method_keeps_last_good_weights(unlearn_here, tmp_path):
    code, _, err = unlearn_here("run", *TINY, "method=negative_gradient", "method.lr=1e12",
                                "method.grad_clip=0")  # fmt: skip
    assert code == 3 and "negative_gradient diverged" in err.strip().splitlines()[-1]
    run = only_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["method_metrics"]["diverged"] is True
    unlearned = metrics["models"]["unlearned"]
    assert all(unlearned[k] is not None and math.isfinite(unlearned[k]) for k in ("UA", "RA", "TA"))
    weights = load_file(str(run / "checkpoints" / "unlearned.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_method_without_a_guard_that_returns_nan_is_caught(unlearn_here, tmp_path, monkeypatch):
    def poisoned(model, split, ctx, opts: FinetuneOptions):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return model

    monkeypatch.setitem(METHODS._items, "finetune", poisoned)
    code, _, _ = unlearn_here("run", *TINY, "method=finetune")
    assert code == 3
    metrics = json.loads((only_run(tmp_path) / "metrics.json").read_text())
    assert metrics["status"] == "diverged"
    # the unlearned model fell back to the original's weights, so its metrics are the original's
    assert metrics["models"]["unlearned"]["RA"] == metrics["models"]["original"]["RA"]


def as_a_foreground_process() -> None:
    """The child a terminal starts: Ctrl-C neither ignored nor blocked. A pytest-xdist worker
    can hand both down (a library run earlier in the same worker blocks or ignores SIGINT
    around its own helper processes), and a child that inherits them never sees the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_interrupted_run_is_recorded_and_a_rerun_resumes_from_the_cache(tmp_path, sig,
                                                                        unlearn_here):  # fmt: skip
    # 20 epochs: the retrain runs for seconds, so the signal lands inside its training loop.
    args = [unlearn_executable(), "run", "dataset=digits", "model.width=8",
            "model.train.epochs=20", "device=cpu", "forget_class=3", "method=retrain",
            "evaluation.noise_floor=false", "evaluation.plots=false",
            "evaluation.representation=false", "request.copies=off"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=as_a_foreground_process)  # fmt: skip
    for line in proc.stderr:  # the original is trained and stored; the retrain has begun
        if "cache miss: training the retrain model" in line:
            break
    proc.send_signal(sig)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, rest
    assert "Traceback" not in rest and "unlearn: interrupted" in rest
    run = only_run(tmp_path)
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"
    entries = cache_entries(tmp_path)
    assert len(entries) == 1 and entries[0].startswith("original-")  # no torn or partial entry
    if sig == signal.SIGTERM:
        return  # how a run ends does not change what a rerun finds: one rerun suffices
    code, _, err = unlearn_here(*args[1:])  # the rerun, in-process
    assert code == 0, err
    assert "cache hit: original model" in err  # resumed: the finished model is reused
    assert len(cache_entries(tmp_path)) == 2


def test_same_config_and_seed_give_identical_metrics(unlearn_here, tmp_path):
    """Two runs from empty caches (everything retrained): bit-identical metrics on the CPU."""
    results = []
    for attempt in ("a", "b"):
        code, _, err = unlearn_here("run", *TINY, "model.train.epochs=4", "method=scrub", "seed=3",
                                    f"cache_dir={tmp_path / attempt}")  # fmt: skip
        assert code == 0, err
    runs = sorted((tmp_path / "outputs" / "runs").iterdir())
    for run in runs:
        results.append(json.loads((run / "metrics.json").read_text()))
    timing = {"time_s", "speedup"}
    for model in ("original", "retrain", "unlearned"):
        first, second = (
            {k: v for k, v in r["models"][model].items() if k not in timing} for r in results
        )
        assert first == second
    for r in results:
        config, versions = r["config"], r["versions"]
        assert (
            config["seed"] == 3 and config["device"] == "cpu" and len(config["config_hash"]) == 16
        )
        assert set(versions) >= {"python", "torch", "unlearn_cli"}
    assert results[0]["config"]["config_hash"] != "" and results[0]["device"] == "cpu"
