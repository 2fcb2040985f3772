"""A memory-mapped store of decoded, standardised images for folders too big for memory.

Built once per state of the folder (file names, sizes and modification times, image size,
channels, split): DataLoader workers decode the images straight into a uint8 file, which is then
standardised chunk by chunk into float32 `train.npy` / `test.npy`. The store is built in a temp
folder and renamed into place, so an interrupted build is never picked up. Later runs map the
files: the OS pages in what each batch needs, and training streams through a DataLoader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.lib.format import open_memmap

from unlearn_cli.atomic import temp_folder, write_failed
from unlearn_cli.data.dataset import ImageDataset, fixed_stats
from unlearn_cli.data.feed import TrainingFeed

if TYPE_CHECKING:  # the schema lives with the builders, which import this module
    from unlearn_cli.data.builders import ImageFolderOptions
from unlearn_cli.data.imagefolder import Listing, decoded_images

log = logging.getLogger(__name__)

STORE_VERSION = 1
CHUNK = 2048  # images standardised per step while building (bounds the builder's memory)

SplitRule = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def decoded_bytes(opts: ImageFolderOptions, listing: Listing) -> int:
    """Size of the folder as standardised float32 tensors."""
    return len(listing.paths) * int(opts.channels) * int(opts.image_size) ** 2 * 4


def store_key(opts: ImageFolderOptions, listing: Listing) -> str:
    spec = {"version": STORE_VERSION, "root": str(listing.root.resolve()),
            "files": listing.fingerprint(),
            "image_size": int(opts.image_size), "channels": int(opts.channels),
            "test_size": float(opts.test_size),
            "normalise": opts.normalise}  # fmt: skip
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _build(folder: Path, opts: ImageFolderOptions, listing: Listing, workers: int, rule: SplitRule):
    size, channels = int(opts.image_size), int(opts.channels)
    raw = open_memmap(
        folder / "raw.npy", "w+", np.uint8, (len(listing.paths), channels, size, size)
    )
    kept = []
    for i, arr in decoded_images(listing.paths, size, channels, workers):
        raw[i] = arr
        kept.append(i)
    kept_idx = np.asarray(kept)
    train_pos, test_pos = rule(kept_idx)
    train_rows, test_rows = kept_idx[train_pos], kept_idx[test_pos]
    # Per-channel mean and (unbiased) std of the training images, accumulated in float64.
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(train_rows), CHUNK):
        xb = raw[train_rows[start : start + CHUNK]].astype(np.float64)
        total += xb.sum(axis=(0, 2, 3))
        squares += (xb**2).sum(axis=(0, 2, 3))
        count += xb.shape[0] * size * size
    mean = total / count
    std = np.sqrt(np.maximum((squares - count * mean**2) / max(count - 1, 1), 0)).clip(1e-6)
    fixed = fixed_stats(opts.normalise)
    if fixed is not None:  # normalise=imagenet: the statistics pretrained weights expect
        mean, std = np.asarray(fixed[0]), np.asarray(fixed[1])
    for name, rows in (("train", train_rows), ("test", test_rows)):
        out = open_memmap(folder / f"{name}.npy", "w+", np.float32, (len(rows), *raw.shape[1:]))
        for start in range(0, len(rows), CHUNK):
            xb = raw[rows[start : start + CHUNK]].astype(np.float32)
            out[start : start + CHUNK] = (xb - mean[:, None, None]) / std[:, None, None]
        out.flush()
        del out
    del raw
    (folder / "raw.npy").unlink()
    meta = {"classes": list(listing.classes), "mean": mean.tolist(), "std": std.tolist(),
            "y_train": listing.labels[train_rows].tolist(),
            "y_test": listing.labels[test_rows].tolist(),
            "train_ids": listing.ids(train_rows),
            "skipped": len(listing.paths) - len(kept)}  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))


def load_or_build(
    opts: ImageFolderOptions,
    listing: Listing,
    cache_dir: Path,
    workers: int,
    rule: SplitRule,
    augment,
) -> ImageDataset:
    """The folder as an ImageDataset whose tensors are memory-mapped files under cache_dir."""
    final = Path(cache_dir) / "datasets" / f"imagefolder-{store_key(opts, listing)}"
    if not (final / "meta.json").is_file():
        what = "the on-disk image store"
        building = temp_folder(final.parent, f".{final.name}.", what)
        # float32 train + test tensors, and the uint8 decoded images while it is built
        size = decoded_bytes(opts, listing) * 5 // 4
        try:
            log.info("building the on-disk image store %s", final)
            try:
                _build(building, opts, listing, workers, rule)
                os.rename(building, final)
            except OSError as exc:
                if not (final / "meta.json").is_file():  # else: another process finished first
                    raise write_failed(exc, final, what, size) from exc
        finally:
            shutil.rmtree(building, ignore_errors=True)
    meta = json.loads((final / "meta.json").read_text())
    if meta["skipped"]:
        log.warning("%d unreadable image(s) were skipped when the store was built", meta["skipped"])

    def mapped(name: str) -> torch.Tensor:
        # copy-on-write mapping: torch needs a writable array; nothing is ever written back
        return torch.from_numpy(np.load(final / f"{name}.npy", mmap_mode="c"))

    return ImageDataset(
        name="imagefolder",
        classes=tuple(meta["classes"]),
        x_train=mapped("train"),
        y_train=torch.as_tensor(meta["y_train"], dtype=torch.int64),
        x_test=mapped("test"),
        y_test=torch.as_tensor(meta["y_test"], dtype=torch.int64),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        pixel_max=255.0,
        train_ids=tuple(meta["train_ids"]),
        feed=TrainingFeed(augment=tuple(augment), stream=True, workers=workers),
    )
