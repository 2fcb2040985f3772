"""Deletion requests: forget lists of sample ids, several classes, a share of one class."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from unlearn_cli.data import load_dataset, make_split
from unlearn_cli.data.forget_list import read_forget_list
from unlearn_cli.data.split import validation_rows
from unlearn_cli.errors import UserError
from unlearn_cli.validate import validate_config

from .conftest import TINY, min_distance, retrain_inputs


@pytest.fixture
def data(make_cfg):
    return load_dataset(validate_config(make_cfg(*TINY)).dataset, "unused")


def listable(data) -> list[int]:
    """Training positions a deletion request may name (not in the held-out validation split)."""
    return [p for p in range(data.num_train) if p not in set(validation_rows(data, 0.05))]


def test_forget_list_removes_exactly_the_listed_samples(make_cfg, data, tmp_path):
    ids, free = list(data.ids()), listable(data)
    picked = [free[3], free[10], free[42]]
    request = [ids[p] for p in picked]
    (tmp_path / "request.txt").write_text("id\n" + "\n".join(map(str, request)) + "\n")
    listed = read_forget_list(tmp_path / "request.txt")
    split = make_split(data, None, None, "class1", 0, forget_ids=listed, list_name="list-request")
    assert split.forget_idx.tolist() == picked
    assert split.describe()["forget_ids"] == request and split.tag == "list-request"
    # a forget list is its own scenario, judged like random samples
    assert split.scenario == "list" and split.targets == "samples"
    assert len(split.retain_idx) == data.num_train - 3 - len(split.validation_idx)

    inputs, _ = retrain_inputs(make_cfg(*TINY), data, split)
    assert min_distance(split.forget[0], inputs).min() > 1e-3  # never saw a listed sample


def test_unknown_ids_are_listed(data):
    with pytest.raises(UserError, match=r"3 id\(s\) of the forget list .*: 99999, abc, -1"):
        make_split(data, None, None, None, 0, forget_ids=["99999", "abc", "-1", str(data.ids()[0])])


def test_test_set_ids_are_not_training_samples(data):
    train = set(data.ids())
    outside = next(i for i in range(10_000) if i not in train)
    with pytest.raises(UserError, match="not training samples"):
        make_split(data, None, None, None, 0, forget_ids=[str(outside)])


def test_duplicates_are_forgotten_once_with_a_warning(data, caplog):
    first = str(data.ids()[0])
    with caplog.at_level(logging.WARNING):
        split = make_split(data, None, None, None, 0, forget_ids=[first, first, first])
    assert len(split.forget_idx) == 1
    assert "more than once" in caplog.text


def test_share_of_one_class(data):
    split = make_split(data, None, 0.25, None, 0, within_class="class2")
    labels = data.y_train[torch.as_tensor(split.forget_idx)]
    held_out = int((data.y_train[torch.as_tensor(split.validation_idx)] == 2).sum())
    pool = int((data.y_train == 2).sum()) - held_out  # validation samples are never forgotten
    assert (labels == 2).all() and len(labels) == round(0.25 * pool)
    assert split.tag == "random0.25-of-class2"
    with pytest.raises(UserError, match="forget_within restricts forget_fraction"):
        make_split(data, "class1", None, None, 0, within_class="class2")


def test_only_one_spec(data):
    with pytest.raises(UserError, match="forget_class and forget_indices_file"):
        make_split(data, "class1", None, None, 0, forget_ids=["1"])


def test_cli_run_with_a_forget_list_records_the_ids(run_cli, tmp_path, data):
    free = listable(data)
    request = [int(data.ids()[free[5]]), int(data.ids()[free[77]])]
    (tmp_path / "gdpr-17.csv").write_text("".join(f"{i},ticket 17\n" for i in request))
    run_cli(
        "run",
        *TINY,
        "method=retrain",
        f"forget_indices_file={tmp_path / 'gdpr-17.csv'}",
        check=True,
    )
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    assert run.name.endswith("_retrain_list-gdpr-17")
    split = json.loads((run / "metrics.json").read_text())["split"]
    assert split["forget_ids"] == request and split["num_forget"] == 2
