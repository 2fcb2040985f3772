"""`unlearn` run as a user would: in-process (`run_cli`), and once as the installed script."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from .conftest import TINY as TINY_ARGS


def test_single_run_writes_the_run_folder(run_cli, tmp_path):
    # In-process: the installed script runs as a real process in tests/test_packaging.py (a
    # whole run from a wheel) and tests/test_reliability.py (its signals and exit codes).
    proc = run_cli("run", *TINY_ARGS, "method=retrain", "evaluation.plots=true", check=True)
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert run.name.endswith("_retrain_class1")
    for name in (
        "metrics.json",
        "metrics.csv",
        "unlearn.log",
        ".hydra/config.yaml",
        "checkpoints/unlearned.safetensors",
        "checkpoints/unlearned.json",
        "plots/per_class_accuracy.png",
        "plots/mia_confidence.png",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["config"]["forget"] == "class1" and metrics["device"] == "cpu"
    assert metrics["models"]["retrain"]["forget_acc"] == 0.0
    assert set(metrics["versions"]) >= {"python", "torch", "unlearn_cli"}
    assert "forget_acc" in proc.stdout and "avg_gap" in proc.stdout  # the printed table
    assert "cache miss" in (run / "unlearn.log").read_text()
    # The cache lives in outputs/cache and the second run hits it.
    run_cli("run", *TINY_ARGS, "method=retrain", check=True)
    second = max((tmp_path / "outputs" / "runs").iterdir())
    assert "cache hit" in (second / "unlearn.log").read_text()


def test_multirun_writes_jobs_and_summary(run_cli, tmp_path):
    run_cli("run", "-m", *TINY_ARGS, "method=retrain", "seed=0,1", check=True)
    sweeps = list((tmp_path / "outputs" / "sweeps").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir())
    assert jobs == ["0_retrain_class1", "1_retrain_class1"]
    summary = pd.read_csv(sweeps[0] / "summary.csv")
    assert summary["seed"].tolist() == [0, 1]
    # the same aggregation as `unlearn report`, written beside the jobs
    report = pd.read_csv(sweeps[0] / "report.csv").set_index("method")
    assert report.loc["retrain", "seeds"] == 2
    assert report.loc["retrain", "UA"] == pytest.approx(summary["UA"].mean())
    assert (sweeps[0] / "tradeoff.png").is_file() and (sweeps[0] / "report.md").is_file()
    assert (summary["status"] == "completed").all()
    for job, row in zip(jobs, summary.itertuples(), strict=True):
        metrics = json.loads((sweeps[0] / job / "metrics.json").read_text())
        assert pytest.approx(metrics["models"]["unlearned"]["UA"]) == row.UA


def test_failed_sweep_job_keeps_the_others(run_cli, tmp_path):
    proc = run_cli("run", "-m", *TINY_ARGS, "method=retrain", "forget_class=class0,unicorn")
    assert proc.returncode != 0
    sweep = next((tmp_path / "outputs" / "sweeps").iterdir())
    summary = pd.read_csv(sweep / "summary.csv")
    assert summary["status"].tolist() == ["completed", "failed"]
    failed = json.loads((sweep / "1_retrain_unicorn" / "metrics.json").read_text())
    assert "unknown class 'unicorn'" in failed["error"]


# The full catalogue runs in-process in test_bad_inputs.py; these prove the installed script.
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["forget_class=unicorn"], "unknown class 'unicorn'; valid classes: class0, class1"),
        (["method=retrian"], "unknown method 'retrian'. Did you mean 'retrain'?"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_work(run_cli, tmp_path, args, message):
    proc = run_cli("run", *TINY_ARGS, *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unlearn: error: ")
    assert message in lines[0]
    assert not (tmp_path / "outputs" / "cache" / "models").exists()  # nothing was trained
    assert not (tmp_path / "outputs" / "runs").exists() or not any(
        (tmp_path / "outputs" / "runs").iterdir()
    )


def test_help_and_cfg_job(run_cli):
    help_proc = run_cli("run", "--help", check=True)
    dataset_line = next(ln for ln in help_proc.stdout.splitlines() if ln.startswith("dataset:"))
    for name in ("animal_mnist", "cifar100", "digits", "imagefolder", "synthetic", "tabular"):
        assert name in dataset_line
    cfg_proc = run_cli("run", "--cfg", "job", "method=retrain", "forget_fraction=0.1", check=True)
    assert "forget_fraction: 0.1" in cfg_proc.stdout
    top = run_cli(check=False)
    assert top.returncode == 2 and "usage: unlearn" in top.stdout
    unknown = run_cli("rnu")
    assert unknown.returncode == 2 and "Did you mean 'run'?" in unknown.stderr


def test_runs_from_another_directory_use_its_outputs(run_cli, tmp_path):
    """Nothing is written anywhere but the current directory's outputs/ (no chdir tricks)."""
    run_cli("run", *TINY_ARGS, "method=retrain", check=True)
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.iterdir()}
    assert written == {"outputs"}
    assert Path(tmp_path / "outputs" / "cache" / "models").is_dir()


def test_a_sweep_over_the_variant_group_is_checked_like_other_groups():
    """`variant=full,memorise` on the command line composes each variant (it used to be set as
    a plain key and ended in a ConfigAttributeError traceback)."""
    from unlearn_cli.overrides import check_overrides

    check_overrides(["-m", "variant=full,memorise", "device=cpu"])
