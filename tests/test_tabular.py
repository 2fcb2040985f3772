"""Tabular data: bundled tables, CSV files, and the convex setting where influence is exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from unlearn_cli.data import load_dataset
from unlearn_cli.errors import UserError
from unlearn_cli.run import run_experiment
from unlearn_cli.validate import validate_config


@pytest.mark.parametrize(("table", "features", "classes"),
                         [("breast_cancer", 30, 2), ("wine", 13, 3), ("iris", 4, 3)])  # fmt: skip
def test_bundled_tables(make_cfg, table, features, classes):
    data = load_dataset(
        validate_config(make_cfg("dataset=tabular", f"dataset.name={table}")).dataset, "unused"
    )
    assert data.input_shape == (1, 1, features) and data.num_classes == classes
    # standardised per feature with training statistics
    assert np.allclose(data.x_train.mean(dim=0).numpy(), 0, atol=1e-4)


def test_influence_matches_retrain_on_breast_cancer(make_cfg, tmp_path):
    """The issue's acceptance run: logistic + influence within 1 point of retrain everywhere."""
    cfg = make_cfg("dataset=tabular", "dataset.name=breast_cancer", "model=logistic",
                   "method=influence", "forget_fraction=0.05", "device=cpu",
                   "evaluation.plots=false")  # fmt: skip
    models = run_experiment(validate_config(cfg), tmp_path / "run")["models"]
    for metric in ("forget_acc", "retain_acc", "test_acc"):
        assert abs(models["unlearned"][metric] - models["retrain"][metric]) <= 1.0, metric
    assert models["unlearned"]["weight_distance"] < 0.1


def test_csv_table(make_cfg, tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    frame["kind"] = np.where(frame["a"] > 0, "yes", "no")
    frame.to_csv(tmp_path / "t.csv", index=False)
    cfg = make_cfg("dataset=tabular", "dataset.name=csv", f"dataset.path={tmp_path / 't.csv'}",
                   "dataset.label_column=kind")  # fmt: skip
    data = load_dataset(validate_config(cfg).dataset, "unused")
    assert data.classes == ("no", "yes") and data.input_shape == (1, 1, 3)
    assert data.num_train + len(data.y_test) == 60


@pytest.mark.parametrize(
    ("content", "overrides", "message"),
    [
        (None, [], "no CSV file"),
        ("a,b\n1,2\n", ["dataset.label_column=kind"], "has no column 'kind'"),
        ("a,kind\nx,1\ny,2\n", ["dataset.label_column=kind"], "must be numeric"),
        ("a,kind\n1,1\n,2\n", ["dataset.label_column=kind"], "empty cells"),
        ("a,kind\n1,1\nnan,2\n", ["dataset.label_column=kind"], "empty cells"),
        ("a,b,kind\n1,inf,1\n2,3,2\n", ["dataset.label_column=kind"], "infinite values: b"),
        ("a,kind\n-inf,1\n2,2\n", ["dataset.label_column=kind"], "infinite values: a"),
    ],
)
def test_bad_csv_is_a_clear_error(make_cfg, tmp_path, content, overrides, message):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_text(content)
    cfg = make_cfg("dataset=tabular", "dataset.name=csv", f"dataset.path={path}", *overrides)
    with pytest.raises(UserError, match=message):
        load_dataset(validate_config(cfg).dataset, "unused")
