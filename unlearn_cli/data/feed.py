"""How training batches reach the model: slices of in-memory tensors, or a DataLoader.

Small datasets sit in memory (on the device when training on a GPU) and a batch is a slice.
Datasets stored on disk (memory-mapped, see `disk_store`) stream through a DataLoader instead:
workers gather rows from the mapped file while the model trains, batches land in pinned memory
and move to the GPU without blocking. Both paths draw the same shuffled order from the same
generator, so a streamed run trains exactly like an in-memory one.

Light augmentation (random crop with padding, horizontal flip) is applied per batch on the
device, from its own generator so it never shifts the batch order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

AUGMENTATIONS = ("crop", "flip")
CROP_PADDING = 4  # pixels of zero padding before the random crop (CIFAR's usual 4 at 32x32)


@dataclass(frozen=True)
class TrainingFeed:
    """Per-dataset batch delivery: `stream` through a DataLoader with `workers`, `augment`."""

    augment: tuple[str, ...] = ()
    stream: bool = False
    workers: int = 0


IN_MEMORY = TrainingFeed()  # the default: in-memory slices, no augmentation


def default_workers() -> int:
    """Loader workers for `workers: auto`: leave one core to the training process, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def augment_batch(x: torch.Tensor, kinds: Sequence[str], generator: torch.Generator):
    """Per-sample random crop (zero padding, then a random window) and/or horizontal flip."""
    if not kinds or x.ndim != 4:
        return x
    n, _, h, w = x.shape
    if "crop" in kinds:
        p = min(CROP_PADDING, h // 4, w // 4)
        if p > 0:
            padded = F.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
            rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None]
            cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, None, :]
            batch = torch.arange(n, device=x.device)[:, None, None, None]
            chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[batch, chans, rows, cols]
    if "flip" in kinds:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(flip, x.flip(3), x)
    return x


class _Rows(Dataset):
    """Rows of (x, y) fetched a whole batch at a time (one gather from the mapped file)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(idx)
        return self.x[index], self.y[index]


def _as_batch(batch):  # module level so worker processes can pickle it
    return batch


class _ShuffledBatches(Sampler[list[int]]):
    """Index batches of `rows` in a fresh permutation per pass (forever when `endless`)."""

    def __init__(self, rows: np.ndarray, batch_size: int, generator, endless: bool) -> None:
        self.rows, self.batch_size = torch.as_tensor(rows), batch_size
        self.generator, self.endless = generator, endless

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            if self.generator is None:
                order = self.rows
            else:
                order = self.rows[torch.randperm(len(self.rows), generator=self.generator)]
            for start in range(0, len(order), self.batch_size):
                yield order[start : start + self.batch_size].tolist()
            if not self.endless:
                return


def batch_stream(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator | None,
    device: torch.device,
    feed: TrainingFeed = IN_MEMORY,
    rows: np.ndarray | None = None,
    endless: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (given a generator) device batches of the `rows` of (x, y) (all rows if None).

    One pass, or forever with `endless`. In memory, the selected rows move to the device once;
    streamed, each batch is gathered by a DataLoader and moved on its own.
    """
    if not feed.stream:
        if rows is not None:
            index = torch.as_tensor(rows)
            x, y = x[index], y[index]
        x, y = x.to(device), y.to(device)
        sampler = _ShuffledBatches(np.arange(len(y)), batch_size, generator, endless)
        for idx in sampler:
            index = torch.as_tensor(idx, device=y.device)
            yield x[index], y[index]
        return
    rows = np.arange(len(y)) if rows is None else np.asarray(rows)
    loader = DataLoader(
        _Rows(x, y),
        batch_sampler=_ShuffledBatches(rows, batch_size, generator, endless),
        collate_fn=_as_batch,
        num_workers=feed.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    for xb, yb in loader:
        yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
