"""`unlearn report`: aggregation over seeds checked against hand-made run folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from unlearn_cli.errors import UserError
from unlearn_cli.evaluation import report


def fake_run(folder, method, seed, unlearned_ua, status="completed"):
    models = {
        "original": {"UA": 1.0 + seed, "RA": 99.0, "TA": 95.0, "MIA": 5.0, "avg_gap": 40.0},
        "retrain": {
            "UA": 100.0,
            "RA": 98.0,
            "TA": 95.0,
            "MIA": 100.0,
            "avg_gap": 0.0,
            "time_s": 20.0,
            "speedup": 1.0,
        },
        "unlearned": {
            "UA": unlearned_ua,
            "RA": 97.0,
            "TA": 94.0,
            "MIA": 99.0,
            "avg_gap": abs(unlearned_ua - 100) / 4,
            "time_s": 2.0,
            "speedup": 10.0,
        },
    }
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "status": status,
        "config": {"dataset": "animal_mnist", "model": "cnn", "method": method, "seed": seed},
        "split": {"scenario": "class", "tag": "elephant"},
        "models": models,
    }))  # fmt: skip


def test_aggregate_mean_std_and_reference_rows(tmp_path):
    for seed, ua in enumerate([90.0, 94.0]):
        fake_run(tmp_path / f"{seed}_ng", "negative_gradient", seed, ua)
        fake_run(tmp_path / f"{seed}_rt", "retrain", seed, 100.0)
    fake_run(tmp_path / "9_failed", "negative_gradient", 9, 0.0, status="failed")
    table = report.aggregate(report.per_seed_rows(report.find_metrics([tmp_path])))
    # the fake retrains of both seeds agree, so the noise floor between them is 0
    assert table["method"].tolist() == [
        "retrain", report.FLOOR, "negative_gradient", report.ORIGINAL
    ]  # fmt: skip
    ng = table.set_index("method").loc["negative_gradient"]
    assert ng["UA"] == pytest.approx(92.0) and ng["UA_std"] == pytest.approx(2**0.5 * 2)
    assert ng["seeds"] == 2  # the failed run is left out
    original = table.set_index("method").loc[report.ORIGINAL]
    assert original["UA"] == pytest.approx(1.5) and original["seeds"] == 2  # deduplicated
    md = report.to_markdown(table, "T")
    assert "| negative_gradient | 2 | 92.00 ± 2.83 |" in md
    assert "## animal_mnist / cnn / class: elephant" in md


def test_a_method_that_diverged_is_counted_and_marked(tmp_path):
    """A diverged run is a result about the method (ngplus as published): its row is kept,
    with the last good weights' figures, and says on how many seeds it diverged."""
    for seed in (0, 1):
        fake_run(tmp_path / f"{seed}_ng", "ngplus", seed, 1.0, status="diverged" if seed else
                 "completed")  # fmt: skip
        fake_run(tmp_path / f"{seed}_rt", "retrain", seed, 100.0)
    table = report.aggregate(report.per_seed_rows(report.find_metrics([tmp_path])))
    ng = table.set_index("method").loc["ngplus"]
    assert ng["seeds"] == 2 and ng["diverged"] == 1
    assert table.set_index("method").loc["retrain", "diverged"] == 0
    md = report.to_markdown(table, "T")
    assert "| ngplus | 1 of 2 |" in md and "diverged = on how many seeds" in md


def test_report_errors(tmp_path):
    with pytest.raises(UserError, match="no such run"):
        report.find_metrics([tmp_path / "missing"])
    with pytest.raises(UserError, match="no metrics.json"):
        report.find_metrics([tmp_path])


def test_report_cli_matches_the_run_files(run_cli, tmp_path):
    from .conftest import TINY

    run_cli("run", "-m", *TINY, "method=retrain,negative_gradient", "seed=0,1", check=True)
    sweep = next((tmp_path / "outputs" / "sweeps").iterdir())
    proc = run_cli("report", str(sweep), "--csv", "r.csv", "--markdown", "r.md",
                   "--note", "Ran with two other sweeps.", check=True)  # fmt: skip
    assert "negative_gradient" in proc.stdout
    assert "Ran with two other sweeps." in (tmp_path / "r.md").read_text()
    table = pd.read_csv(tmp_path / "r.csv").set_index("method")
    runs = sorted(sweep.glob("*_negative_gradient_class1"))
    uas = [json.loads((r / "metrics.json").read_text())["models"]["unlearned"]["UA"] for r in runs]
    assert len(uas) == 2
    assert table.loc["negative_gradient", "UA"] == pytest.approx(sum(uas) / 2)
    assert table.loc["negative_gradient", "seeds"] == 2
    assert table.loc["negative_gradient", "UA_std"] == pytest.approx(float(np.std(uas, ddof=1)))
    assert (tmp_path / "r.md").read_text().startswith("# Unlearning report")
    for plot in ("metric_bars.png", "tradeoff.png"):  # beside the CSV
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
