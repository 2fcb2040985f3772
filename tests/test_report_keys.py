"""`unlearn report`: configurations kept apart by their method options, and the noise floor row.

Runs are hand-made metrics.json files, so these tests train nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pandas as pd
import pytest

from unlearn_cli.evaluation import report
from unlearn_cli.evaluation.sweep import write_sweep_report
from unlearn_cli.record import RunRecord, short_hash
from unlearn_cli.validate import validate_config

RETRAIN = {"UA": 100.0, "RA": 98.0, "TA": 95.0, "MIA": 100.0, "avg_gap": 0.0,
           "time_s": 20.0, "speedup": 1.0}  # fmt: skip
ORIGINAL = {"UA": 1.0, "RA": 99.0, "TA": 95.5, "MIA": 5.0, "avg_gap": 40.0}
UNSET = object()


def unlearned(avg_gap: float, **metrics: float) -> dict:
    return {**RETRAIN, "avg_gap": avg_gap, "time_s": 2.0, "speedup": 10.0, **metrics}


def write_run(folder, method, seed, *, model=None, retrain=RETRAIN, options=UNSET,
              other_seed=None):  # fmt: skip
    """A completed run's metrics.json; options=None writes one from before method_hash existed."""
    cfg = {"dataset": "animal_mnist", "model": "cnn", "method": method, "seed": seed}
    if options is not None:
        opts = {"name": method, **({} if options is UNSET else options)}
        cfg.update(method_options=opts, method_hash=short_hash(opts))
    models = {"original": ORIGINAL, "retrain": retrain}
    if method != "retrain":
        models["unlearned"] = model or unlearned(1.0)
    if other_seed is not None:
        models[report.FLOOR_ROLE] = other_seed
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "status": "completed",
        "config": cfg,
        "split": {"scenario": "class", "tag": "elephant"},
        "models": models,
    }))  # fmt: skip
    return folder / "metrics.json"


def table_of(folder) -> pd.DataFrame:
    return report.aggregate(report.per_seed_rows(report.find_metrics([folder])))


def test_tuning_sweep_learning_rates_are_three_rows(tmp_path):
    uas = {0.01: 90.0, 0.001: 95.0, 0.0005: 99.0}
    for seed in (0, 1):
        for i, (lr, ua) in enumerate(uas.items()):
            options = {"epochs": 5, "lr": lr, "retain_weight": 0.95}
            write_run(tmp_path / f"{seed}{i}_ng", "negative_gradient", seed,
                      model=unlearned((100 - ua) / 4, UA=ua + seed), options=options)  # fmt: skip
    table = table_of(tmp_path).set_index("method")
    for lr, ua in uas.items():
        row = table.loc[f"negative_gradient (lr={lr})"]
        assert row["UA"] == pytest.approx(ua + 0.5) and row["seeds"] == 2
    assert "negative_gradient" not in table.index
    assert sum(m.startswith("negative_gradient") for m in table.index) == 3


def test_labels_name_only_the_options_that_differ():
    configs = {
        "a": {"name": "ng", "lr": 0.01, "epochs": 5, "opt": {"momentum": 0.9}},
        "b": {"name": "ng", "lr": 0.001, "epochs": 3, "opt": {"momentum": 0.9}},
        "c": {"name": "ng", "lr": 0.001, "epochs": 5, "opt": {"momentum": 0.5}, "max": None},
        "": None,
    }
    assert report.configuration_labels("ng", configs) == {
        "a": "ng (lr=0.01, epochs=5, opt.momentum=0.9)",
        "b": "ng (lr=0.001, epochs=3, opt.momentum=0.9)",
        "c": "ng (lr=0.001, epochs=5, opt.momentum=0.5, max=null)",
        "": "ng (options not recorded)",
    }
    assert report.configuration_labels("ng", {"a": configs["a"]}) == {"a": "ng"}


def test_metrics_without_method_hash_still_load_as_one_configuration(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / f"{seed}_ng", "negative_gradient", seed, options=None)
    table = table_of(tmp_path).set_index("method")
    assert table.loc["negative_gradient", "seeds"] == 2


def test_true_duplicate_keeps_one_row_and_names_the_skipped_file(tmp_path, caplog):
    first = write_run(tmp_path / "0_ng", "negative_gradient", 0, model=unlearned(1.0, UA=90.0))
    second = write_run(tmp_path / "1_ng", "negative_gradient", 0, model=unlearned(1.0, UA=50.0))
    with caplog.at_level(logging.WARNING, logger="unlearn_cli.evaluation.report"):
        table = table_of(tmp_path).set_index("method")
    assert table.loc["negative_gradient", "seeds"] == 1
    assert table.loc["negative_gradient", "UA"] == 90.0  # the first file wins
    assert any(str(second) in r.getMessage() and str(first) in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_run_record_writes_method_options_and_hash(tmp_path, make_cfg):
    config = validate_config(make_cfg("dataset=synthetic", "model=mlp", "method=negative_gradient",
                                      "method.lr=0.002", "device=cpu"))  # fmt: skip
    method = {"name": "negative_gradient", **dataclasses.asdict(config.method.options)}
    RunRecord(tmp_path, config, "class0")
    written = json.loads((tmp_path / "metrics.json").read_text())["config"]
    assert written["method_options"] == method and method["lr"] == 0.002
    assert written["method_hash"] == short_hash(method) and len(written["method_hash"]) == 16
    reordered = {k: method[k] for k in reversed(method)}
    assert short_hash(reordered) == written["method_hash"]  # key order does not matter


RETRAINS = [  # per seed: UA, RA, TA, MIA
    {"UA": 100.0, "RA": 98.0, "TA": 95.0, "MIA": 100.0},
    {"UA": 100.0, "RA": 97.0, "TA": 94.0, "MIA": 96.0},
    {"UA": 100.0, "RA": 99.0, "TA": 95.0, "MIA": 98.0},
]
PAIR_GAPS = [(0 + 1 + 1 + 4) / 4, (0 + 1 + 0 + 2) / 4, (0 + 2 + 1 + 2) / 4]  # (0,1) (0,2) (1,2)


def test_floor_from_pairs_of_seeds_and_the_marks(tmp_path):
    for seed, metrics in enumerate(RETRAINS):
        retrain = {**RETRAIN, **metrics}
        write_run(tmp_path / f"{seed}_rt", "retrain", seed, retrain=retrain)
        write_run(tmp_path / f"{seed}_ssd", "ssd", seed, retrain=retrain, model=unlearned(1.0))
        write_run(tmp_path / f"{seed}_ft", "finetune", seed, retrain=retrain,
                  model=unlearned(3.0))  # fmt: skip
    table = table_of(tmp_path)
    assert table["method"].tolist() == [
        "retrain", "ssd", report.FLOOR, "finetune", report.ORIGINAL
    ]  # fmt: skip
    floor = table.set_index("method").loc[report.FLOOR]
    assert floor["avg_gap"] == pytest.approx(np.mean(PAIR_GAPS))
    assert floor["avg_gap_std"] == pytest.approx(np.std(PAIR_GAPS, ddof=1))
    assert floor["seeds"] == 3
    assert floor["RA"] == pytest.approx(98.0) and floor["MIA"] == pytest.approx(98.0)
    assert floor["RA_std"] == pytest.approx(1.0)
    assert pd.isna(floor["time_s"]) and pd.isna(floor["mia_auc"])
    marks = table.set_index("method")[report.WITHIN].to_dict()
    assert marks == {"retrain": "yes", "ssd": "yes", report.FLOOR: "",
                     "finetune": "", report.ORIGINAL: ""}  # fmt: skip


def test_floor_from_the_retrain_other_seed_model(tmp_path):
    for seed, gap in enumerate([2.0, 4.0]):
        retrain = {**RETRAIN, **RETRAINS[seed]}  # pairs would give another floor: not used
        other = {**RETRAIN, "UA": 99.0 - seed, "avg_gap": gap, "time_s": 21.0}
        write_run(tmp_path / f"{seed}_ng", "negative_gradient", seed, retrain=retrain,
                  model=unlearned(2.5), other_seed=other)  # fmt: skip
        write_run(tmp_path / f"{seed}_ft", "finetune", seed, retrain=retrain,
                  model=unlearned(3.5), other_seed=other)  # fmt: skip
    table = table_of(tmp_path).set_index("method")
    floor = table.loc[report.FLOOR]
    assert floor["avg_gap"] == pytest.approx(3.0) and floor["avg_gap_std"] == pytest.approx(2**0.5)
    assert floor["UA"] == pytest.approx(98.5) and floor["seeds"] == 2
    assert table.loc["negative_gradient", report.WITHIN] == "yes"
    assert table.loc["finetune", report.WITHIN] == ""


def test_one_seed_without_the_role_has_no_floor(tmp_path):
    write_run(tmp_path / "0_ng", "negative_gradient", 0)
    table = table_of(tmp_path)
    assert report.FLOOR not in set(table["method"])
    assert set(table[report.WITHIN]) == {""}
    md = report.to_markdown(table, "T")
    assert report.WITHIN not in md and "| method | seeds | UA |" in md


def test_floor_in_markdown_csv_plots_and_sweep_report(tmp_path):
    for seed, metrics in enumerate(RETRAINS[:2]):
        retrain = {**RETRAIN, **metrics}
        for lr in (0.01, 0.001):
            write_run(tmp_path / f"{seed}_{lr}", "negative_gradient", seed, retrain=retrain,
                      model=unlearned(lr * 200), options={"lr": lr})  # fmt: skip
    table = table_of(tmp_path)
    md = report.to_markdown(table, "T", report.BENCH_PREAMBLE)
    header = (
        "| method | seeds | UA | RA | TA | MIA | mia_attack_acc | mia_auc | avg_gap | within_floor "
        "| time_s |"
    )
    assert header in md and report.FLOOR_CAPTION in md
    floor_gap = PAIR_GAPS[0]
    assert f"| {report.FLOOR} | 2 | 100.00 ± 0.00 | 97.50 ± 0.71 |" in md
    assert f"| {floor_gap:.2f} |  |" in md  # the floor row itself is not marked
    assert "| negative_gradient (lr=0.001) | 2 |" in md and "| 0.20 ± 0.00 | yes |" in md
    assert report.grouped_tables(table)[0].caption == report.FLOOR_CAPTION
    assert [p.name for p in report.write_plots(table, tmp_path)] == [
        "metric_bars.png", "tradeoff.png"
    ]  # fmt: skip
    write_sweep_report(tmp_path)
    csv = pd.read_csv(tmp_path / "report.csv", keep_default_na=False).set_index("method")
    assert csv.loc[report.FLOOR, "avg_gap"] == pytest.approx(floor_gap)
    assert csv.loc["negative_gradient (lr=0.01)", report.WITHIN] == ""
    assert csv.loc["negative_gradient (lr=0.001)", report.WITHIN] == "yes"
    assert report.WITHIN in (tmp_path / "report.md").read_text()
