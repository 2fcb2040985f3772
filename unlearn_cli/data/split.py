"""The forget/retain/test split that every method and metric works from."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from unlearn_cli.data.dataset import ImageDataset
from unlearn_cli.errors import UserError


@dataclass(frozen=True)
class ForgetSplit:
    """Training indices split into forget and retain, plus the matching test views.

    For class forgetting, `test` holds the remaining classes and `forget_test` the test images of
    the forgotten classes; for random forgetting `test` is the whole test set and `forget_test`
    is empty.
    """

    data: ImageDataset
    forget_idx: np.ndarray
    retain_idx: np.ndarray
    forget_classes: tuple[int, ...]
    tag: str

    @property
    def scenario(self) -> str:
        return "class" if self.forget_classes else "random"

    @property
    def forget(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(self.forget_idx)
        return self.data.x_train[idx], self.data.y_train[idx]

    @property
    def retain(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(self.retain_idx)
        return self.data.x_train[idx], self.data.y_train[idx]

    def _test_mask(self) -> torch.Tensor:
        forgotten = torch.as_tensor(self.forget_classes, dtype=torch.int64)
        return torch.isin(self.data.y_test, forgotten)

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        keep = ~self._test_mask()
        return self.data.x_test[keep], self.data.y_test[keep]

    @property
    def forget_test(self) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self._test_mask()
        return self.data.x_test[mask], self.data.y_test[mask]

    def fingerprint(self) -> str:
        """A short hash of exactly which training samples are forgotten (for cache keys, audits)."""
        return hashlib.sha256(np.sort(self.forget_idx).astype(np.int64).tobytes()).hexdigest()[:16]

    def describe(self) -> dict:
        return {
            "scenario": self.scenario,
            "tag": self.tag,
            "forget_classes": [self.data.classes[c] for c in self.forget_classes],
            "num_forget": int(len(self.forget_idx)),
            "num_retain": int(len(self.retain_idx)),
            "num_test": int(len(self.test[1])),
            "num_forget_test": int(len(self.forget_test[1])),
            "forget_fingerprint": self.fingerprint(),
        }


def forget_tag(forget_class: object, forget_fraction: object, default_class: object) -> str:
    """Folder-name tag of a forget spec: 'elephant', 'cat+dog', 'random0.1'."""
    if forget_fraction is not None:
        return f"random{forget_fraction}"
    chosen = default_class if forget_class is None else forget_class
    if isinstance(chosen, Sequence) and not isinstance(chosen, str):
        return "+".join(str(c) for c in chosen)
    return str(chosen)


def resolve_class(name_or_index: object, classes: Sequence[str]) -> int:
    """Map a class name or index to its index; unknown classes name the valid ones."""
    text = str(name_or_index)
    if text in classes:
        return classes.index(text)
    if isinstance(name_or_index, int) or text.lstrip("-").isdigit():
        index = int(text)
        if 0 <= index < len(classes):
            return index
    raise UserError(f"unknown class '{text}'; valid classes: {', '.join(classes)}")


def make_split(
    data: ImageDataset,
    forget_class: object,
    forget_fraction: float | None,
    default_class: object,
    seed: int,
) -> ForgetSplit:
    """Choose the forget set from exactly one spec (a class list or a fraction) and split."""
    n = data.num_train
    labels = data.y_train.numpy()
    if forget_class is not None and forget_fraction is not None:
        raise UserError("give either forget_class or forget_fraction, not both")
    if forget_fraction is not None:
        fraction = float(forget_fraction)
        if not 0.0 < fraction < 1.0:
            raise UserError(f"forget_fraction must be strictly between 0 and 1, got {fraction}")
        count = int(round(fraction * n))
        if count < 1 or count >= n:
            raise UserError(f"forget_fraction={fraction} selects {count} of {n} training samples")
        rng = np.random.default_rng(seed)
        forget_idx = np.sort(rng.choice(n, size=count, replace=False))
        classes: tuple[int, ...] = ()
    else:
        spec = default_class if forget_class is None else forget_class
        names = [spec] if isinstance(spec, str | int) else list(spec)
        if not names:
            raise UserError("forget_class is an empty list; name at least one class")
        classes = tuple(sorted({resolve_class(c, data.classes) for c in names}))
        forget_idx = np.flatnonzero(np.isin(labels, classes))
        if len(forget_idx) == 0:
            raise UserError(f"forget set is empty: no training samples of {names}")
        if len(forget_idx) == n:
            raise UserError("the forget set is the whole training set; nothing would remain")
    retain_idx = np.setdiff1d(np.arange(n), forget_idx, assume_unique=True)
    tag = forget_tag([data.classes[c] for c in classes] if classes else None, forget_fraction, None)
    return ForgetSplit(data, forget_idx, retain_idx, classes, tag)
