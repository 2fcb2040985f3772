"""Sweeps that fan out: the joblib launcher, the Optuna sweeper, the shared cache (the submitit
launcher: tests/test_long_runs.py, where a preempted job is requeued)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import TINY


def only_sweep(tmp_path: Path) -> Path:
    (sweep,) = (tmp_path / "outputs" / "sweeps").iterdir()
    return sweep


def job_logs(sweep: Path) -> str:
    return "".join(p.read_text() for p in sweep.glob("*/unlearn.log"))


@pytest.mark.slow
def test_parallel_launcher_trains_each_base_model_once(run_cli, tmp_path):
    """The issue's acceptance sweep, two jobs at a time on this machine."""
    run_cli("run", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
            "method=retrain,negative_gradient", "seed=0,1", *TINY, check=True)  # fmt: skip
    sweep = only_sweep(tmp_path)
    summary = pd.read_csv(sweep / "summary.csv")  # one summary for the whole sweep
    assert len(summary) == 4 and (summary["status"] == "completed").all()
    logs = job_logs(sweep)
    assert logs.count("cache miss: training the original model") == 2  # one per seed
    assert logs.count("cache miss: training the retrain model") == 2


def test_optuna_sweep_minimises_val_gap_and_survives_failed_trials(run_cli, tmp_path):
    # lr=1e30 makes a trial diverge at run time (a bad value such as batch_size=0 is now
    # refused before the sweep starts, see test_options.py)
    proc = run_cli("run", "-m", "sweep=optuna_salun", "hydra.sweeper.n_trials=4",
                   "method.lr=choice(1e30,0.005)", "method.grad_clip=0", *TINY)  # fmt: skip
    assert "Traceback" not in proc.stderr
    sweep = only_sweep(tmp_path)
    summary = pd.read_csv(sweep / "summary.csv")
    assert len(summary) == 4  # every trial ran, also after one failed
    failed = summary[summary["status"].isin(["failed", "diverged"])]
    done = summary[summary["status"] == "completed"]
    assert len(done) >= 1
    assert proc.returncode == (1 if len(failed) else 0)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == done["val_gap"].min()  # the objective never sees the test set
    assert best["best_params"]["method.lr"] == 0.005
