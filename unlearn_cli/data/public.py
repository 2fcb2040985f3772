"""Public image sets through torchvision's file layouts: CIFAR-10/100, MNIST, Fashion-MNIST.

Files live under `dataset.root` (default `<cache_dir>/datasets`). When they are missing and
`dataset.download` is on, torchvision downloads them (it checks their md5); offline that fails
and the error says which folder to put the files in. CIFAR batches are pickles: they are checked
against torchvision's pinned md5s first (`verify_checksums`) and read by the numpy-only
unpickler, never by plain pickle. MNIST files are raw idx arrays.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unlearn_cli.data.animal_mnist import NumpyOnlyUnpickler
from unlearn_cli.errors import UserError

if TYPE_CHECKING:  # the schema lives with the builders, which import this module
    from unlearn_cli.data.builders import PublicOptions

log = logging.getLogger(__name__)

# torchvision's dataset class of each name (imported when used: it costs a second at start-up)
CIFAR = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}
MNIST = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def torchvision_dataset(class_name: str):
    from torchvision import datasets

    return getattr(datasets, class_name)


def fetch(cls, root: Path, name: str, opts: PublicOptions, present: bool) -> None:
    """Download the set when it is missing, or fail with where to put it."""
    if present:
        return
    where = root / (cls.base_folder if hasattr(cls, "base_folder") else f"{cls.__name__}/raw")
    if not opts.download:
        raise UserError(
            f"{name} not found: put its files in {where} (or set dataset.download=true)"
        )
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - offline shows up as many different exceptions
        raise UserError(
            f"could not download {name} ({type(exc).__name__}; offline?). Put its files in "
            f"{where} and run again"
        ) from exc


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def read_cifar(cls, root: Path, name: str, opts: PublicOptions):
    folder = root / cls.base_folder
    fetch(
        cls,
        root,
        name,
        opts,
        all((folder / f).is_file() for f, _ in cls.train_list + cls.test_list),
    )
    label_key = "fine_labels" if cls.__name__ == "CIFAR100" else "labels"
    parts = {}
    for split_name, files in (("train", cls.train_list), ("test", cls.test_list)):
        xs, ys = [], []
        for name, checksum in files:
            path = folder / name
            if opts.verify_checksums and md5(path) != checksum:
                raise UserError(f"{path} does not match its published md5; refusing to read it")
            batch = load_dict(path)
            xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        parts[split_name] = (np.concatenate(xs), np.concatenate(ys))
    meta = load_dict(folder / cls.meta["filename"])
    classes = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in meta[cls.meta["key"]])
    return parts["train"], parts["test"], classes


def load_dict(path: Path) -> dict:
    with open(path, "rb") as fh:
        data = NumpyOnlyUnpickler(fh, encoding="latin1").load()
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a CIFAR batch")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


def read_mnist(cls, root: Path, name: str, opts: PublicOptions):
    raw = root / cls.__name__ / "raw"
    names = [Path(url).stem if url.endswith(".gz") else Path(url).name for url, _ in cls.resources]
    fetch(cls, root, name, opts, all((raw / n).is_file() for n in names))
    parts = []
    for train in (True, False):
        ds = cls(str(root), train=train, download=False)
        parts.append((ds.data.numpy().astype(np.uint8), ds.targets.numpy().astype(np.int64)))
    return parts[0], parts[1], tuple(cls.classes)


def load_public(name: str, opts: PublicOptions):
    """((x_train, y_train), (x_test, y_test), classes) as uint8 (N, C, H, W) / (N, H, W)."""
    root = Path(str(opts.root)).expanduser()
    if name in CIFAR:
        return read_cifar(torchvision_dataset(CIFAR[name]), root, name, opts)
    return read_mnist(torchvision_dataset(MNIST[name]), root, name, opts)
