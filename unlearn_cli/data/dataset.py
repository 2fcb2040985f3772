"""The in-memory image dataset every builder returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unlearn_cli.data.feed import TrainingFeed


@dataclass(frozen=True)
class ImageDataset:
    """Images as normalised float32 NCHW tensors with int64 labels, split into train and test.

    Small datasets live in memory as tensors: batches are slices, with no per-sample loader cost.
    Large image folders are memory-mapped files (`disk_store`) and `feed.stream` is set.
    """

    name: str
    classes: tuple[str, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    # How raw pixels were standardised, so a checkpoint can preprocess new images the same way:
    # x = (raw - mean) / std per channel, raw on a 0..pixel_max scale (None: not image data).
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    pixel_max: float | None = None
    # The id of each training row as a deletion request names it (the row's index in the full
    # dataset, or a file path); empty means "position in the training set".
    train_ids: tuple = ()
    # How training batches are delivered and augmented (in memory and unaugmented by default).
    feed: TrainingFeed = TrainingFeed()
    # A hash of the user's data as read (file names, sizes and times of an image folder, the
    # bytes of a CSV): model cache keys include it, so edited data never meets old models.
    fingerprint: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    def ids(self) -> tuple:
        return self.train_ids or tuple(range(self.num_train))


def from_arrays(
    name: str,
    classes: tuple[str, ...],
    images: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    pixel_max: float | None = None,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> ImageDataset:
    """Turn uint8/float (N, H, W) or (N, C, H, W) arrays into a standardised ImageDataset.

    Per-channel mean and std come from the training part alone, so the test set stays unseen,
    unless `stats` fixes them (e.g. the ImageNet statistics a pretrained network expects).
    """
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    x_train, x_test = x[torch.as_tensor(train_idx)], x[torch.as_tensor(test_idx)]
    if stats is None:
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    else:
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in stats)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return ImageDataset(
        name=name,
        classes=classes,
        x_train=((x_train - mean) / std).contiguous(),
        y_train=y[torch.as_tensor(train_idx)].contiguous(),
        x_test=((x_test - mean) / std).contiguous(),
        y_test=y[torch.as_tensor(test_idx)].contiguous(),
        mean=tuple(mean.flatten().tolist()),
        std=tuple(std.flatten().tolist()),
        pixel_max=pixel_max,
        train_ids=tuple(int(i) for i in train_idx),
    )


# The per-channel mean and std (of 0..1 pixels) that torchvision's pretrained weights expect.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def fixed_stats(normalise: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The standardisation imposed by `normalise` on 0..255 pixels (None: the data's own)."""
    if normalise != "imagenet":
        return None
    return tuple(255.0 * m for m in IMAGENET_MEAN), tuple(255.0 * s for s in IMAGENET_STD)
