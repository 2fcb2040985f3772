"""The forget/retain/test split: invariants, specs and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn_cli.data import ImageDataset, forget_tag, load_dataset
from unlearn_cli.data import make_split as split_with_validation
from unlearn_cli.errors import UserError
from unlearn_cli.validate import validate_config


def toy_dataset(labels_train, labels_test=None, classes=None) -> ImageDataset:
    y = torch.as_tensor(labels_train, dtype=torch.int64)
    yt = torch.as_tensor(
        labels_test if labels_test is not None else labels_train, dtype=torch.int64
    )
    k = int(max(y.max(), yt.max()).item()) + 1
    classes = classes or tuple(f"c{i}" for i in range(k))
    return ImageDataset(
        "toy", classes, torch.randn(len(y), 1, 2, 2), y, torch.randn(len(yt), 1, 2, 2), yt
    )


def make_split(*args, **kwargs):
    """The split logic alone (no validation rows); `test_validation_split` covers those."""
    return split_with_validation(*args, **{"validation_fraction": 0.0, **kwargs})


def assert_partition(split, n):
    assert np.intersect1d(split.forget_idx, split.retain_idx).size == 0
    assert np.array_equal(np.union1d(split.forget_idx, split.retain_idx), np.arange(n))


def test_class_split_by_name_and_index():
    data = toy_dataset([0, 1, 2, 1, 0, 2, 1], [0, 1, 2, 2])
    by_name = make_split(data, "c1", None, None, seed=0)
    by_index = make_split(data, 1, None, None, seed=0)
    assert by_name.forget_idx.tolist() == by_index.forget_idx.tolist() == [1, 3, 6]
    assert by_name.scenario == "class" and by_name.tag == "c1"
    assert_partition(by_name, 7)
    # Test accuracy is over the remaining classes; forget_test holds the forgotten class only.
    assert by_name.test[1].tolist() == [0, 2, 2]
    assert by_name.forget_test[1].tolist() == [1]
    assert set(by_name.retain[1].tolist()) == {0, 2}


def test_several_classes_and_default():
    data = toy_dataset([0, 1, 2, 3] * 3)
    split = make_split(data, ["c3", 0], None, None, seed=0)
    assert split.forget_classes == (0, 3) and split.tag == "c0+c3"
    assert set(split.forget[1].tolist()) == {0, 3}
    default = make_split(data, None, None, "c2", seed=0)
    assert default.forget_classes == (2,)


def test_random_split_is_seeded_and_sized():
    data = toy_dataset(list(range(5)) * 20)
    a = make_split(data, None, 0.1, "c0", seed=1)
    b = make_split(data, None, 0.1, "c0", seed=1)
    c = make_split(data, None, 0.1, "c0", seed=2)
    assert len(a.forget_idx) == 10 and a.scenario == "random" and a.tag == "random0.1"
    assert np.array_equal(a.forget_idx, b.forget_idx)
    assert not np.array_equal(a.forget_idx, c.forget_idx)
    assert len(a.forget_test[1]) == 0 and len(a.test[1]) == 100
    assert_partition(a, 100)


@pytest.mark.parametrize(
    ("forget_class", "fraction", "message"),
    [
        ("unicorn", None, "unknown class 'unicorn'; valid classes: c0, c1, c2"),
        (7, None, "unknown class '7'"),
        ("c1", 0.1, "give only one of"),
        (None, 0.0, "strictly between 0 and 1"),
        (None, 1.0, "strictly between 0 and 1"),
        (None, 0.001, "selects 0 of"),
        ([], None, "empty list"),
        (["c0", "c1", "c2"], None, "whole training set"),
    ],
)
def test_bad_specs_are_user_errors(forget_class, fraction, message):
    data = toy_dataset([0, 1, 2] * 10)
    with pytest.raises(UserError, match=message):
        make_split(data, forget_class, fraction, "c0", seed=0)


def test_forget_tag():
    assert forget_tag(None, None, "elephant") == "elephant"
    assert forget_tag(["cat", "dog"], None, "elephant") == "cat+dog"
    assert forget_tag(None, 0.1, "elephant") == "random0.1"


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=2, max_size=80),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**31),
    use_class=st.booleans(),
)
def test_split_properties(labels, fraction, seed, use_class):
    data = toy_dataset(labels)
    n = len(labels)
    try:
        if use_class:
            split = make_split(data, labels[0], None, None, seed)
        else:
            split = make_split(data, None, fraction, None, seed)
    except UserError:
        return  # specs that select nothing or everything are rejected, never silently accepted
    assert_partition(split, n)
    forget_labels = data.y_train[torch.as_tensor(split.forget_idx)]
    if use_class:
        assert (forget_labels == labels[0]).all()
        assert labels[0] not in data.y_train[torch.as_tensor(split.retain_idx)].tolist()
    else:
        assert len(split.forget_idx) == round(fraction * n)


def test_synthetic_dataset_is_deterministic_and_stratified(make_cfg):
    cfg = make_cfg("dataset=synthetic")
    a = load_dataset(validate_config(cfg).dataset, "unused")
    b = load_dataset(validate_config(cfg).dataset, "unused")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    per_class = torch.bincount(a.y_test)
    assert per_class.min() == per_class.max() == cfg.dataset.test_size // cfg.dataset.num_classes
    assert a.input_shape == (1, 8, 8) and a.num_classes == 4


def test_digits_dataset(make_cfg):
    cfg = make_cfg("dataset=digits")
    data = load_dataset(validate_config(cfg).dataset, "unused")
    assert len(data.y_test) == 360 and data.num_train == 1797 - 360
    assert data.classes[3] == "3"
    # Standardised with training statistics only.
    assert abs(float(data.x_train.mean())) < 1e-4


def test_validation_split_is_fixed_stratified_and_never_forgotten():
    data = toy_dataset(list(range(5)) * 20)
    a = split_with_validation(data, None, 0.5, None, seed=1, validation_fraction=0.1)
    b = split_with_validation(data, None, 0.5, None, seed=2, validation_fraction=0.1)
    c = split_with_validation(data, "c1", None, None, seed=3, validation_fraction=0.1)
    assert np.array_equal(a.validation_idx, b.validation_idx)  # the same for every seed
    assert np.array_equal(a.validation_idx, c.validation_idx)
    assert sorted(data.y_train[a.validation_idx].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    for split in (a, b, c):
        parts = [split.forget_idx, split.retain_idx, split.validation_idx]
        assert sum(map(len, parts)) == 100 and len(np.unique(np.concatenate(parts))) == 100
    assert 1 not in c.validation[1].tolist()  # like `test`: the remaining classes only
    listed = data.ids()[a.validation_idx[0]]
    with pytest.raises(UserError, match="validation split"):
        split_with_validation(data, None, None, None, seed=0, forget_ids=[listed],
                              validation_fraction=0.1)  # fmt: skip
