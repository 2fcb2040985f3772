"""Planted copies: the copies benchmark's ground truth (`request.plant`, docs/copies.md).

A share of the request's samples get 1 to `max_copies` near-copies each, appended to the
training set (so the original trains on them) and left in the retain set, as copies a user
does not know about would be. Each copy is its sample with one augmentation: a mirror, a shift
of 1-2 pixels, brightness +-10%, JPEG at quality 75, or Gaussian noise. Copies of a class
request's images get another label (hidden members: the class's images filed elsewhere); copies
of samples keep theirs. The planted rows change the data, so every model cache key changes with
them (the dataset's content fingerprint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from unlearn_cli.copies.options import PlantOptions
from unlearn_cli.copies.scan import raw_pixels
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.errors import UserError

NOISE_SIGMA = 0.02 * 255  # Gaussian noise: 2% of the pixel range
BRIGHTNESS = 0.10
JPEG_QUALITY = 75


@dataclass(frozen=True)
class Planted:
    """The ground truth: each planted row, the request sample it copies, and how."""

    rows: np.ndarray
    source: np.ndarray
    how: tuple[str, ...]

    def describe(self) -> dict:
        kinds, counts = np.unique(np.asarray(self.how, dtype=object), return_counts=True)
        by_augmentation = {str(k): int(n) for k, n in zip(kinds, counts, strict=True)}
        return {"num_planted": int(len(self.rows)),
                "num_sources": int(len(np.unique(self.source))),
                "by_augmentation": by_augmentation}  # fmt: skip


def check_plantable(split: ForgetSplit) -> None:
    data = split.data
    if data.pixel_max is None:
        raise UserError(f"request.plant makes image copies; {data.name} is a table")
    if data.feed.stream:
        raise UserError(f"request.plant appends copies to an in-memory training set; "
                        f"{data.name} is read from disk")  # fmt: skip


def plant_copies(split: ForgetSplit, opts: PlantOptions, seed: int) -> tuple[ForgetSplit, Planted]:
    """`split` over a training set with the planted copies appended (in its retain set)."""
    check_plantable(split)
    data = split.data
    rng = np.random.default_rng([seed, 20250])
    pool = np.sort(split.forget_idx)
    chosen = np.sort(rng.choice(pool, size=max(1, round(opts.share * len(pool))), replace=False))
    source = np.repeat(chosen, rng.integers(1, opts.max_copies + 1, size=len(chosen)))
    how = tuple(str(a) for a in rng.choice(list(opts.augmentations), size=len(source)))
    copies = np.stack([augment(image, kind, rng) for image, kind in
                       zip(raw_pixels(data, source), how, strict=True)])  # fmt: skip
    labels = data.y_train[torch.as_tensor(source)].clone()
    if split.targets == "class":  # hidden members: the class's images under other labels
        others = np.setdiff1d(np.arange(data.num_classes), split.forget_classes)
        labels = torch.as_tensor(rng.choice(others, size=len(source)), dtype=torch.int64)
    n = data.num_train
    rows = np.arange(n, n + len(source), dtype=np.int64)
    digest = hashlib.sha256(data.fingerprint.encode() + copies.tobytes() + labels.numpy()
                            .tobytes() + source.tobytes()).hexdigest()[:16]  # fmt: skip
    planted_data = dataclasses.replace(
        data,
        x_train=torch.cat([data.x_train, standardise(copies, data)]),
        y_train=torch.cat([data.y_train, labels]),
        train_ids=(*data.train_ids, *(f"planted-{i}" for i in range(len(rows))))
        if data.train_ids else (),
        fingerprint=f"planted-{digest}",
    )  # fmt: skip
    planted_split = dataclasses.replace(
        split, data=planted_data, retain_idx=np.concatenate([split.retain_idx, rows]),
        planted_idx=rows, planted_sources=np.unique(source),
    )  # fmt: skip
    return planted_split, Planted(rows, source, how)


def standardise(images: np.ndarray, data) -> torch.Tensor:
    """uint8 0-255 images as the dataset's standardised float tensors."""
    mean = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)
    raw = torch.as_tensor(images, dtype=torch.float32) * (float(data.pixel_max) / 255.0)
    return (raw - mean) / std


def augment(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One near-copy of a uint8 (C, H, W) image."""
    if kind == "flip":
        return image[..., ::-1].copy()
    if kind == "shift":
        dy, dx = rng.choice([-2, -1, 0, 1, 2], size=2)
        if dy == 0 and dx == 0:
            dx = rng.choice([-2, -1, 1, 2])
        return shifted(image, int(dy), int(dx))
    if kind == "brightness":
        factor = 1 + BRIGHTNESS * rng.choice([-1, 1])
        return np.clip(np.round(image.astype(np.float64) * factor), 0, 255).astype(np.uint8)
    if kind == "jpeg":
        return jpeg(image)
    if kind == "noise":
        noisy = image.astype(np.float64) + rng.normal(0, NOISE_SIGMA, size=image.shape)
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown augmentation {kind}")


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The image moved by (dy, dx) pixels; the uncovered border repeats the edge."""
    height, width = image.shape[-2:]
    ys = np.clip(np.arange(height) - dy, 0, height - 1)
    xs = np.clip(np.arange(width) - dx, 0, width - 1)
    return image[..., ys[:, None], xs[None, :]]


def jpeg(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(pil.mode))
    return decoded[None] if decoded.ndim == 2 else decoded.transpose(2, 0, 1)


def detection_figures(planted: Planted, pairs: pd.DataFrame, scans: tuple[str, ...]) -> dict:
    """Recall of each scan (and of any) per augmentation, and each scan's precision against the
    planted truth: a pair it found in the retain set counts against it unless it is a planted
    copy of that sample or an exact duplicate (the data's own copies, found by the exact scan,
    are copies too)."""
    pairs_of = list(zip(planted.source.tolist(), planted.rows.tolist(), strict=True))
    truth = set(pairs_of)
    found: dict[str, set] = {kind: set() for kind in (*scans, "any")}
    if len(pairs):
        own = pairs[(pairs["forget_row"] >= 0) & (pairs["set"] == "retain")]
        for f, c, by in zip(own["forget_row"], own["copy_row"], own["matched_by"], strict=True):
            for kind in by.split(";"):
                if kind in found:
                    found[kind].add((int(f), int(c)))
            found["any"].add((int(f), int(c)))
            if "exact" in by.split(";"):
                truth.add((int(f), int(c)))
    recall: dict[str, dict[str, float]] = {}
    for aug in sorted(set(planted.how)):
        wanted = {p for p, h in zip(pairs_of, planted.how, strict=True) if h == aug}
        recall[aug] = {kind: len(wanted & got) / len(wanted) for kind, got in found.items()}
    precision = {kind: (len(got & truth) / len(got) if got else float("nan"))
                 for kind, got in found.items()}  # fmt: skip
    return {"recall": recall, "precision": precision}
