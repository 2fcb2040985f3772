"""imagefolder: your own images, laid out as root/<class>/<image> (e.g. animals/elephant/1.jpg).

Images are decoded with PIL, converted to grayscale or RGB, resized and held in memory. A root
with train/ and test/ subfolders uses them as the split; otherwise a fixed stratified split is
drawn. Unreadable images are skipped with one warning that lists them. Sample ids (for forget
lists) are paths relative to the root, such as `elephant/1.jpg` or `train/elephant/1.jpg`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS

from unlearn_cli.errors import UserError

log = logging.getLogger(__name__)


def class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"{root} holds no class folders; expected root/<class>/<image>")
    return folders


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)


def scan(root: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """Image paths, label indices and class names under root/<class>/..."""
    folders = class_folders(root)
    paths, labels = [], []
    for label, folder in enumerate(folders):
        files = image_files(folder)
        if not files:
            raise UserError(f"class folder {folder} has no images ({', '.join(IMG_EXTENSIONS)})")
        paths += files
        labels += [label] * len(files)
    return paths, labels, tuple(f.name for f in folders)


def decode(paths: list[Path], size: int, channels: int) -> tuple[np.ndarray, list[int]]:
    """(n, C, size, size) uint8 array of the readable images and the indices that were read."""
    mode = "L" if channels == 1 else "RGB"
    arrays, kept, broken = [], [], []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert(mode).resize((size, size)), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError):
            broken.append(path.name)
            continue
        arrays.append(arr.reshape(size, size, -1).transpose(2, 0, 1))
        kept.append(i)
    if broken:
        shown = ", ".join(broken[:10]) + (
            f" and {len(broken) - 10} more" if len(broken) > 10 else ""
        )
        log.warning("skipped %d unreadable image(s): %s", len(broken), shown)
    if not arrays:
        raise UserError("no readable images were found")
    return np.stack(arrays), kept


def load_folder(cfg: DictConfig):
    """Images, labels, class names, sample ids and (train, test) index arrays or None."""
    if cfg.root is None:
        raise UserError("dataset=imagefolder needs dataset.root=<folder of class folders>")
    root = Path(str(cfg.root)).expanduser()
    if not root.is_dir():
        raise UserError(f"dataset.root: no such folder {root}")
    parts = [root / "train", root / "test"]
    if all(p.is_dir() for p in parts):
        (tr_paths, tr_labels, classes), (te_paths, te_labels, te_classes) = map(scan, parts)
        if te_classes != classes:
            raise UserError(f"{root}/train and {root}/test have different class folders")
        paths, labels = tr_paths + te_paths, tr_labels + te_labels
        is_train = np.array([True] * len(tr_paths) + [False] * len(te_paths))
    else:
        paths, labels, classes = scan(root)
        is_train = None
    images, kept = decode(paths, int(cfg.image_size), int(cfg.channels))
    labels_kept = np.asarray(labels)[kept]
    ids = [str(paths[i].relative_to(root)) for i in kept]
    fixed = None if is_train is None else (np.flatnonzero(is_train[kept]),
                                           np.flatnonzero(~is_train[kept]))  # fmt: skip
    return images, labels_kept, classes, ids, fixed
