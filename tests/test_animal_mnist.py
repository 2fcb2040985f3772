"""animal_mnist: pinned hashes before reading, restricted unpickling, the .npz cache, the split."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

from unlearn_cli.data import animal_mnist, load_dataset
from unlearn_cli.errors import UserError
from unlearn_cli.validate import validate_config


class Boom:
    """Unpickling this would run os.system: the restricted unpickler must refuse it."""

    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_restricted_unpickler_admits_numpy_arrays():
    array = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert np.array_equal(animal_mnist.load_numpy_pickle(pickle.dumps(array)), array)


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        animal_mnist.load_numpy_pickle(pickle.dumps(Boom()))
    assert not (tmp_path / "pwned").exists()


def test_hash_mismatch_refuses_before_unpickling(tmp_path):
    evil = tmp_path / "animal_data_version_3.gz"
    evil.write_bytes(gzip.compress(pickle.dumps(Boom())))
    with pytest.raises(UserError, match="refusing to read it"):
        animal_mnist.read_verified(evil, animal_mnist.FILES["images"][1])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="missing"):
        animal_mnist.read_verified(tmp_path / "nope.gz", "0" * 64)


needs_package = pytest.mark.skipif(
    importlib.util.find_spec("animal_mnist") is None,
    reason="animal-mnist is not installed (make install does it)",
)


@needs_package
def test_real_dataset_split_and_cache(make_cfg, tmp_path):
    cfg = make_cfg()
    data = load_dataset(validate_config(cfg).dataset, tmp_path)
    assert data.classes[5] == "elephant" and data.num_classes == 10
    assert data.num_train == 8000 and len(data.y_test) == 2000
    assert data.input_shape == (1, 28, 28)
    # Stratified: 800 train and 200 test images per class.
    assert np.bincount(data.y_train.numpy()).tolist() == [800] * 10
    assert np.bincount(data.y_test.numpy()).tolist() == [200] * 10
    cache_file = Path(tmp_path) / "datasets" / "animal_mnist-v3.npz"
    assert cache_file.is_file()
    again = load_dataset(validate_config(cfg).dataset, tmp_path)  # from the .npz this time
    assert np.array_equal(again.x_test.numpy(), data.x_test.numpy())


@needs_package
def test_corrupt_npz_cache_is_rebuilt(make_cfg, tmp_path):
    cache_file = Path(tmp_path) / "datasets" / "animal_mnist-v3.npz"
    cache_file.parent.mkdir(parents=True)
    cache_file.write_bytes(b"not a zip file")
    data = load_dataset(validate_config(make_cfg()).dataset, tmp_path)
    assert data.num_train == 8000
    with np.load(cache_file, allow_pickle=False) as npz:
        assert npz["images"].shape == (10000, 28, 28)
