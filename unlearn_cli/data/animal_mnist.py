"""animal_mnist: read the packaged Animal-MNIST pickles safely and cache them as .npz.

The data ship inside the PyPI package animal-mnist==0.4 as gzip'd pickles. Pickles can run code,
so both files are checked against pinned SHA-256 hashes first and then read by an unpickler that
admits nothing but numpy array reconstruction.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import logging
import pickle
from pathlib import Path

import numpy as np
from numpy._core.multiarray import _reconstruct

from unlearn_cli.atomic import atomic_write_npz
from unlearn_cli.errors import UserError

log = logging.getLogger(__name__)

CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
PACKAGE = "animal_mnist"
SUBDIR = ("data", "Animal_MNIST")
FILES = {
    "images": (
        "animal_data_version_3.gz",
        "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    ),
    "labels": (
        "animal_label_version_3.gz",
        "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
    ),
}
INSTALL_HINT = "pip install --no-deps animal-mnist==0.4"


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only the globals numpy needs to rebuild a plain ndarray; anything else is refused."""

    def find_class(self, module: str, name: str) -> object:
        allowed = {
            # numpy 1.x wrote "numpy.core"; numpy 2 moved it to "numpy._core".
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return allowed[(module, name)]


def load_numpy_pickle(data: bytes) -> np.ndarray:
    """Unpickle bytes that must contain exactly one numpy array."""
    array = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(array, np.ndarray):
        raise pickle.UnpicklingError(f"expected a numpy array, found {type(array).__name__}")
    return array


def package_data_dir() -> Path:
    """Where the installed animal-mnist package keeps its files (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"dataset animal_mnist needs the package animal-mnist: run `{INSTALL_HINT}`"
        )
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*SUBDIR)


def read_verified(path: Path, sha256: str) -> bytes:
    """Read a gzip file whose compressed bytes must match a pinned hash; return the content."""
    if not path.is_file():
        raise UserError(f"animal_mnist file missing: {path}; reinstall with `{INSTALL_HINT}`")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise UserError(
            f"animal_mnist file {path.name} has sha256 {digest[:12]}..., expected "
            f"{sha256[:12]}...; refusing to read it. Reinstall with `{INSTALL_HINT}`"
        )
    return gzip.decompress(raw)


def load_arrays(cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (10000, 28, 28) uint8 and labels (10000,) int64, from the .npz cache when present."""
    cache_file = Path(cache_dir) / "datasets" / "animal_mnist-v3.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as npz:
                images, labels = npz["images"], npz["labels"]
            check_arrays(images, labels)
            return images, labels
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable dataset cache %s (%s); rebuilding it", cache_file, exc)
    folder = package_data_dir()
    images = load_numpy_pickle(read_verified(folder / FILES["images"][0], FILES["images"][1]))
    labels = load_numpy_pickle(read_verified(folder / FILES["labels"][0], FILES["labels"][1]))
    images, labels = images.astype(np.uint8, copy=False), labels.astype(np.int64, copy=False)
    check_arrays(images, labels)
    atomic_write_npz(cache_file, "the dataset cache", images=images, labels=labels)
    log.info("cached animal_mnist arrays at %s", cache_file)
    return images, labels


def check_arrays(images: np.ndarray, labels: np.ndarray) -> None:
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise ValueError(f"unexpected shapes {images.shape} / {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(CLASSES):
        raise ValueError("labels out of range")
