"""imagefolder: your own images, laid out as root/<class>/<image> (e.g. animals/elephant/1.jpg).

Images are decoded with PIL by DataLoader workers, converted to grayscale or RGB and resized;
small folders are held in memory, large ones go to a memory-mapped store (`disk_store`). A root
with train/ and test/ subfolders uses them as the split; otherwise a fixed stratified split is
drawn. Unreadable images are skipped with one warning that lists them. Sample ids (for forget
lists) are paths relative to the root, such as `elephant/1.jpg` or `train/elephant/1.jpg`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from unlearn_cli.console import progress_bar
from unlearn_cli.errors import UserError

if TYPE_CHECKING:  # the schema lives with the builders, which import this module
    from unlearn_cli.data.builders import ImageFolderOptions

log = logging.getLogger(__name__)


def class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"{root} holds no class folders; expected root/<class>/<image>")
    return folders


def image_extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS  # imported late: slow to import

    return IMG_EXTENSIONS


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in image_extensions())


def scan(root: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """Image paths, label indices and class names under root/<class>/..."""
    folders = class_folders(root)
    paths, labels = [], []
    for label, folder in enumerate(folders):
        files = image_files(folder)
        if not files:
            raise UserError(
                f"class folder {folder} has no images ({', '.join(image_extensions())})"
            )
        paths += files
        labels += [label] * len(files)
    return paths, labels, tuple(f.name for f in folders)


class _DecodeFiles(Dataset):
    """One image file -> (index, (C, size, size) uint8 array), or (index, None) if unreadable."""

    def __init__(self, paths: list[Path], size: int, channels: int) -> None:
        self.paths, self.size, self.mode = paths, size, "L" if channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None]:
        try:
            with Image.open(self.paths[i]) as img:
                arr = np.asarray(img.convert(self.mode).resize((self.size, self.size)), np.uint8)
        except (OSError, UnidentifiedImageError, ValueError):
            return i, None
        return i, arr.reshape(self.size, self.size, -1).transpose(2, 0, 1)


def _as_list(batch):  # module level so worker processes can pickle it
    return batch


def decoded_images(
    paths: list[Path], size: int, channels: int, workers: int
) -> Iterator[tuple[int, np.ndarray]]:
    """(index, uint8 image) of every readable file, decoded by `workers` DataLoader workers.

    Unreadable files are skipped and listed in one warning at the end; none readable is an error.
    """
    loader = DataLoader(_DecodeFiles(paths, size, channels), batch_size=64,
                        num_workers=workers, collate_fn=_as_list)  # fmt: skip
    broken, read = [], 0
    with progress_bar("decoding images", total=len(paths)) as bar:
        for batch in loader:
            for i, arr in batch:
                if arr is None:
                    broken.append(paths[i].name)
                else:
                    read += 1
                    yield i, arr
            bar.advance(len(batch))
    if broken:
        shown = ", ".join(broken[:10]) + (
            f" and {len(broken) - 10} more" if len(broken) > 10 else ""
        )
        log.warning("skipped %d unreadable image(s): %s", len(broken), shown)
    if not read:
        raise UserError("no readable images were found")


@dataclass(frozen=True)
class Listing:
    """The image files of a folder, before decoding."""

    root: Path
    paths: list[Path]
    labels: np.ndarray
    classes: tuple[str, ...]
    is_train: np.ndarray | None  # from train/ and test/ subfolders, else None

    def ids(self, kept: Sequence[int]) -> list[str]:
        return [str(self.paths[i].relative_to(self.root)) for i in kept]

    def fingerprint(self) -> str:
        """A hash of every image's relative path, size and modification time: an edited,
        added or removed file changes it without any image being decoded."""
        digest = hashlib.sha256()
        for path in self.paths:
            stat = path.stat()
            digest.update(f"{path.relative_to(self.root)}\0{stat.st_size}\0"
                          f"{stat.st_mtime_ns}\n".encode())  # fmt: skip
        return digest.hexdigest()[:16]


def list_folder(opts: ImageFolderOptions) -> Listing:
    """Check the root and list its images; no image is opened yet."""
    if opts.root is None:
        raise UserError("dataset=imagefolder needs dataset.root=<folder of class folders>")
    root = Path(str(opts.root)).expanduser()
    if not root.is_dir():
        raise UserError(f"dataset.root: no such folder {root}")
    parts = [root / "train", root / "test"]
    if all(p.is_dir() for p in parts):
        (tr_paths, tr_labels, classes), (te_paths, te_labels, te_classes) = map(scan, parts)
        if te_classes != classes:
            raise UserError(f"{root}/train and {root}/test have different class folders")
        is_train = np.array([True] * len(tr_paths) + [False] * len(te_paths))
        return Listing(root, tr_paths + te_paths, np.asarray(tr_labels + te_labels), classes,
                       is_train)  # fmt: skip
    paths, labels, classes = scan(root)
    return Listing(root, paths, np.asarray(labels), classes, None)


def load_folder(opts: ImageFolderOptions, listing: Listing, workers: int):
    """Decode every image into memory: images, labels, sample ids, kept file indices."""
    pairs = list(decoded_images(listing.paths, int(opts.image_size), int(opts.channels), workers))
    kept = [i for i, _ in pairs]
    images = np.stack([arr for _, arr in pairs])
    return images, listing.labels[kept], listing.ids(kept), kept
