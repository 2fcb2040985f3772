"""CIFAR and MNIST from tiny files written in their real on-disk formats; never the network."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

from unlearn_cli.data import load_dataset
from unlearn_cli.data import public as public_module
from unlearn_cli.errors import UserError
from unlearn_cli.validate import validate_config

rng = np.random.default_rng(0)


def write_cifar10(root, per_batch=12):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]  # plain ints, as in CIFAR
        batch = {b"batch_label": name.encode(), b"labels": labels,
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]  # fmt: skip
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))


def write_idx(path, array):
    with open(path, "wb") as fh:
        code = 0x08  # unsigned byte
        fh.write(struct.pack(">HBB", 0, code, array.ndim))
        fh.write(struct.pack(f">{array.ndim}I", *array.shape))
        fh.write(array.astype(np.uint8).tobytes())


def write_mnist(root, folder="MNIST", n_train=40, n_test=10):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def test_cifar10_python_batches(make_cfg, tmp_path):
    write_cifar10(tmp_path)
    cfg = make_cfg("dataset=cifar10", f"dataset.root={tmp_path}", "dataset.verify_checksums=false")
    data = load_dataset(validate_config(cfg).dataset, tmp_path)
    assert data.input_shape == (3, 32, 32) and data.classes[3] == "cat"
    assert data.num_train == 60 and len(data.y_test) == 12
    assert data.feed.augment == ("crop", "flip")  # CIFAR trains with the usual light augmentation


def test_cifar_checksums_refuse_files_that_are_not_the_published_ones(make_cfg, tmp_path):
    write_cifar10(tmp_path)
    cfg = make_cfg("dataset=cifar10", f"dataset.root={tmp_path}")
    with pytest.raises(UserError, match="does not match its published md5"):
        load_dataset(validate_config(cfg).dataset, tmp_path)


def test_cifar_batches_never_run_code(make_cfg, tmp_path):
    write_cifar10(tmp_path)

    class Boom:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"x": Boom()}))
    cfg = make_cfg("dataset=cifar10", f"dataset.root={tmp_path}", "dataset.verify_checksums=false")
    with pytest.raises(pickle.UnpicklingError):
        load_dataset(validate_config(cfg).dataset, tmp_path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_idx_files(make_cfg, tmp_path, name, folder):
    write_mnist(tmp_path, folder)
    data = load_dataset(
        validate_config(make_cfg(f"dataset={name}", f"dataset.root={tmp_path}")).dataset, tmp_path
    )
    assert data.input_shape == (1, 28, 28) and data.num_train == 40 and len(data.y_test) == 10
    assert "crop" in data.feed.augment and ("flip" in data.feed.augment) == (name != "mnist")


def test_missing_files_without_download_name_the_folder(make_cfg, tmp_path):
    cfg = make_cfg("dataset=cifar100", f"dataset.root={tmp_path}", "dataset.download=false")
    with pytest.raises(UserError, match="cifar-100-python"):
        load_dataset(validate_config(cfg).dataset, tmp_path)


def test_offline_download_is_a_clear_error(make_cfg, tmp_path, monkeypatch):
    from urllib.error import URLError

    class Offline:
        base_folder = "cifar-100-python"
        __name__ = "CIFAR100"

        def __init__(self, *args, **kwargs):
            raise URLError("no network")

    cfg = make_cfg("dataset=cifar100", f"dataset.root={tmp_path}", "dataset.download=true")
    dataset = validate_config(cfg).dataset
    with pytest.raises(UserError, match="could not download cifar100 .*cifar-100-python"):
        public_module.fetch(Offline, tmp_path, dataset.name, dataset.options, present=False)
