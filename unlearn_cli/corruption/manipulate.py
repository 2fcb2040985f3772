"""Manipulated training data (BadNets poison, interclass label confusion) and the partial request.

Rows to manipulate are drawn from the trainable rows (never the validation split) with the run
seed; which of them the request names (`identified`) is drawn from a second stream, so every
value of `identified` shares the same manipulated data, hence the same cached original.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from unlearn_cli.corruption.options import CorruptionOptions
from unlearn_cli.data.dataset import ImageDataset
from unlearn_cli.data.split import ForgetSplit, resolve_class
from unlearn_cli.errors import UserError


@dataclass(frozen=True)
class Manipulation:
    """What was done to the training data: the ground truth a run keeps."""

    kind: str
    rows: np.ndarray  # every manipulated training row
    true_labels: np.ndarray  # their labels before
    identified: np.ndarray  # the rows the request names
    target: int | None = None  # poison: the trigger's label
    classes: tuple[int, ...] = ()  # confusion: the swapped pair
    patch: int = 3

    @property
    def left(self) -> np.ndarray:
        """Manipulated rows the request missed: they stay in the retain set."""
        return np.setdiff1d(self.rows, self.identified)

    def patched(self, x: torch.Tensor, data: ImageDataset) -> torch.Tensor:
        """`x` (standardised) with the trigger: a `patch` x `patch` square at the maximum pixel
        value in the bottom-right corner of every channel."""
        top = (float(data.pixel_max) - torch.tensor(data.mean)) / torch.tensor(data.std)
        out = x.clone()
        out[..., -self.patch :, -self.patch :] = top.view(1, -1, 1, 1).to(out.dtype)
        return out

    def describe(self, classes: tuple[str, ...]) -> dict:
        return {
            "kind": self.kind,
            "num_manipulated": int(len(self.rows)),
            "num_identified": int(len(self.identified)),
            "num_left": int(len(self.left)),
            "target": None if self.target is None else classes[self.target],
            "classes": [classes[c] for c in self.classes],
            "patch": self.patch if self.kind == "poison" else None,
        }


def check_corruptible(data: ImageDataset, opts: CorruptionOptions) -> None:
    """Bad corruption options, in one line before any training."""
    if data.pixel_max is None:
        raise UserError(f"corruption.kind={opts.kind} manipulates images; {data.name} is a table")
    if data.feed.stream:
        raise UserError(f"corruption needs an in-memory training set; {data.name} is read "
                        "from disk")  # fmt: skip
    if opts.kind == "poison":
        resolve_class(opts.target, data.classes)
        height, width = data.input_shape[1:]
        if opts.patch >= min(height, width):
            raise UserError(f"corruption.patch={opts.patch} is not smaller than the "
                            f"{height}x{width} images")  # fmt: skip
    if opts.kind == "confusion" and opts.classes != "auto":
        pair = {resolve_class(c, data.classes) for c in opts.classes}
        if len(pair) != 2:
            raise UserError("corruption.classes names the same class twice")


def corrupt(data: ImageDataset, opts: CorruptionOptions, seed: int, validation: np.ndarray,
            pair: tuple[int, int] | None = None) -> tuple[ImageDataset, Manipulation]:  # fmt: skip
    """The training set with `opts.share` of its trainable rows manipulated, and the truth."""
    check_corruptible(data, opts)
    labels = data.y_train.numpy()
    trainable = np.setdiff1d(np.arange(data.num_train), validation)
    count = int(round(opts.share * len(trainable)))
    rng = np.random.default_rng([seed, 1])
    x, y = data.x_train, data.y_train.clone()
    target, classes = None, ()
    if opts.kind == "poison":
        target = resolve_class(opts.target, data.classes)
        pool = trainable[labels[trainable] != target]
        rows = np.sort(rng.choice(pool, size=min(max(count, 1), len(pool)), replace=False))
        manipulation = Manipulation("poison", rows, labels[rows].copy(), rows, target,
                                    patch=opts.patch)  # fmt: skip
        x = x.clone()
        x[torch.as_tensor(rows)] = manipulation.patched(x[torch.as_tensor(rows)], data)
        y[torch.as_tensor(rows)] = target
    else:
        assert pair is not None, "confusion needs its pair of classes"
        classes = tuple(sorted(pair))
        rows = np.concatenate([
            rng.choice(trainable[labels[trainable] == c],
                       size=min(max(count // 2, 1), int((labels[trainable] == c).sum())),
                       replace=False)
            for c in classes
        ])  # fmt: skip
        rows = np.sort(rows)
        a, b = classes
        swapped = np.where(labels[rows] == a, b, a)
        y[torch.as_tensor(rows)] = torch.as_tensor(swapped, dtype=y.dtype)
        manipulation = Manipulation("confusion", rows, labels[rows].copy(), rows, None, classes,
                                    opts.patch)  # fmt: skip
    named = max(1, int(round(opts.identified * len(rows))))
    chosen = np.sort(np.random.default_rng([seed, 2]).choice(rows, size=named, replace=False))
    manipulation = dataclasses.replace(manipulation, identified=chosen)
    digest = hashlib.sha256(f"{data.fingerprint}|{opts.kind}|{target}|{classes}|{opts.patch}"
                            .encode() + rows.tobytes()).hexdigest()[:16]  # fmt: skip
    corrupted = dataclasses.replace(data, x_train=x, y_train=y, fingerprint=f"{opts.kind}-{digest}")
    return corrupted, manipulation


def corrupted_split(data: ImageDataset, manipulation: Manipulation, validation: np.ndarray,
                    opts: CorruptionOptions) -> ForgetSplit:  # fmt: skip
    """The request: the identified rows, judged like a forget list; the rest stays."""
    trainable = np.setdiff1d(np.arange(data.num_train), validation)
    tag = f"{manipulation.kind}{opts.share:g}-identified{opts.identified:g}"
    return ForgetSplit(data, manipulation.identified,
                       np.setdiff1d(trainable, manipulation.identified), (), tag, from_list=True,
                       validation_idx=validation, corruption=manipulation)  # fmt: skip


def without_every_manipulated(split: ForgetSplit) -> ForgetSplit:
    """The split of the model the user wanted: every manipulated row removed."""
    rows = split.corruption.rows
    trainable = np.union1d(split.forget_idx, split.retain_idx)
    return dataclasses.replace(split, forget_idx=rows, retain_idx=np.setdiff1d(trainable, rows))


def most_confused_pair(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple:
    """The two classes a model mixes up most (both directions counted), by its predictions."""
    predicted = logits.argmax(dim=1)
    counts = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    counts.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    mixed = (counts + counts.T).fill_diagonal_(-1)
    a, b = divmod(int(mixed.argmax()), num_classes)
    return tuple(sorted((a, b)))
