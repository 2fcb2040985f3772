"""The forget/retain/test split that every method and metric works from."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearn_cli.data.dataset import ImageDataset
from unlearn_cli.errors import UserError

log = logging.getLogger(__name__)


MAX_LISTED_IDS = 1000  # metrics.json lists the forgotten ids up to this many, else hash + count
# The validation split never depends on the run seed: every run of a dataset shares it.
VALIDATION_SEED = 1


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
    from_list: bool = False  # the forget set is an explicit list of ids (a deletion request)
    # Training rows held out from every model (never forgotten, never trained on): what methods
    # may look at to make choices (stop rules, reference images); the test set is for evaluation.
    validation_idx: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # A stream's step: the rows and classes earlier requests forgot. The model should know
    # them no more, so `test` and `validation` leave those classes out too (`forget_test` is
    # this request's alone), and UA_earlier measures whether it re-learnt the rows.
    earlier_idx: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    forgotten_before: tuple[int, ...] = ()
    # A stream with learn steps: training rows held out of the original and not learned yet.
    # The model never saw them; they are in neither forget nor retain.
    unseen_idx: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # Copies planted in the retain set (request.plant, copies/plant.py): the copies benchmark's
    # ground truth; `copies_acc` is the accuracy on those the retain set still holds.
    planted_idx: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    planted_sources: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # Corrective unlearning (corruption/manipulate.py): the manipulated rows, their true labels
    # and the ones the request names; the corruption metrics read it.
    corruption: Any = None

    @property
    def scenario(self) -> str:
        """class | random | list. A list is judged like random samples (see `targets`)."""
        if self.forget_classes:
            return "class"
        return "list" if self.from_list else "random"

    @property
    def targets(self) -> str:
        """What unlearning aims at: `class` (never predict the class; forget_test holds its
        unseen images) or `samples` (forget samples should look like unseen data, so stop
        targets, references and the MIA non-members come from data the model never saw)."""
        return "class" if self.forget_classes else "samples"

    @property
    def forget(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(self.forget_idx)
        return self.data.x_train[idx], self.data.y_train[idx]

    @property
    def retain(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(self.retain_idx)
        return self.data.x_train[idx], self.data.y_train[idx]

    @property
    def trainable_idx(self) -> np.ndarray:
        """The rows the original model trains on: forget and retain, never validation."""
        return np.sort(np.concatenate([self.forget_idx, self.retain_idx]))

    @property
    def validation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation samples of the remaining classes (unseen data, like `test`)."""
        idx = torch.as_tensor(self.validation_idx)
        x, y = self.data.x_train[idx], self.data.y_train[idx]
        keep = ~torch.isin(y, self._gone_classes())
        return x[keep], y[keep]

    def _gone_classes(self) -> torch.Tensor:
        return torch.as_tensor((*self.forget_classes, *self.forgotten_before), dtype=torch.int64)

    def _test_mask(self) -> torch.Tensor:
        forgotten = torch.as_tensor(self.forget_classes, dtype=torch.int64)
        return torch.isin(self.data.y_test, forgotten)

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        keep = ~torch.isin(self.data.y_test, self._gone_classes())
        return self.data.x_test[keep], self.data.y_test[keep]

    @property
    def forget_test(self) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self._test_mask()
        return self.data.x_test[mask], self.data.y_test[mask]

    def fingerprint(self) -> str:
        """A short hash of exactly which training samples are forgotten (for cache keys, audits)."""
        return hashlib.sha256(np.sort(self.forget_idx).astype(np.int64).tobytes()).hexdigest()[:16]

    @property
    def removed_idx(self) -> np.ndarray:
        """Every row the model should no longer know: this request's and earlier ones'."""
        return np.union1d(self.forget_idx, self.earlier_idx).astype(np.int64)

    def removed_fingerprint(self) -> str:
        """`fingerprint` of every removed row: the key of the model retrained without them (a
        single request's is its `fingerprint`; a stream's step k shares it with a single run
        that forgets requests 1..k at once)."""
        digest = hashlib.sha256(self.removed_idx.tobytes())
        if len(self.unseen_idx):  # what the model never saw shapes its retraining too
            digest.update(b"unseen" + np.sort(self.unseen_idx).astype(np.int64).tobytes())
        return digest.hexdigest()[:16]

    def validation_fingerprint(self) -> str:
        """A short hash of the held-out validation rows (they shape every model: cache keys)."""
        rows = np.sort(self.validation_idx).astype(np.int64).tobytes()
        return hashlib.sha256(rows).hexdigest()[:16]

    def describe(self) -> dict:
        ids = [self.data.ids()[i] for i in self.forget_idx]
        listed = {"forget_ids": ids} if len(ids) <= MAX_LISTED_IDS else {}
        return {
            **listed,
            "scenario": self.scenario,
            "targets": self.targets,
            "tag": self.tag,
            "forget_classes": [self.data.classes[c] for c in self.forget_classes],
            "num_forget": int(len(self.forget_idx)),
            "num_retain": int(len(self.retain_idx)),
            "num_validation": int(len(self.validation_idx)),
            "num_test": int(len(self.test[1])),
            "num_forget_test": int(len(self.forget_test[1])),
            "forget_fingerprint": self.fingerprint(),
        }


def forget_tag(
    forget_class: object,
    forget_fraction: object,
    default_class: object,
    indices_file: object = None,
    within: object = None,
    stream: object = None,
    stream_file: object = None,
    stream_steps: object = None,
    corruption: object = None,
    identified: object = None,
) -> str:
    """Folder-name tag of a forget spec: 'elephant', 'cat+dog', 'random0.1', 'list-request7',
    a stream's: 'stream-random4', 'stream-mysteps' (stream.file=mysteps.yaml), 'stream-steps'
    (steps given on the command line), or a corrective request's: 'poison-identified0.5'."""
    if corruption not in (None, "none"):
        return f"{corruption}-identified{identified}"
    if stream_file is not None:
        return f"stream-{Path(str(stream_file)).stem}"
    if stream not in (None, "none"):
        return f"stream-{stream}"
    if stream_steps:
        return "stream-steps"
    if indices_file is not None:
        return f"list-{Path(str(indices_file)).stem}"
    if forget_fraction is not None:
        return f"random{forget_fraction}" + (f"-of-{within}" if within is not None else "")
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
    forget_ids: Sequence | None = None,
    within_class: object = None,
    list_name: str = "list",
    validation_fraction: float = 0.05,
    given_original: bool = False,
) -> ForgetSplit:
    """Choose the forget set from exactly one spec and split.

    Specs: classes (`forget_class`), a random share of the training set or of one class
    (`forget_fraction`, `within_class`), or explicit sample ids (`forget_ids`, a deletion request).
    With `given_original` (the user's own trained model) listed ids may be validation rows.
    """
    given = [s for s, v in (("forget_class", forget_class), ("forget_fraction", forget_fraction),
                            ("forget_indices_file", forget_ids)) if v is not None]  # fmt: skip
    if len(given) > 1:
        raise UserError(f"give only one of forget_class, forget_fraction, forget_indices_file "
                        f"(got {' and '.join(given)})")  # fmt: skip
    if within_class is not None and forget_fraction is None:
        raise UserError("forget_within restricts forget_fraction; give forget_fraction with it")
    classes: tuple[int, ...] = ()
    validation = validation_rows(data, validation_fraction)
    if forget_ids is not None:
        forget_idx = positions_of(data, forget_ids)
        held_out = np.intersect1d(forget_idx, validation)
        if len(held_out) and given_original:
            # A user's own original (original.checkpoint) may have trained on any sample: a
            # listed one leaves the validation split and is forgotten like the others.
            validation = np.setdiff1d(validation, held_out)
        elif len(held_out):
            shown = ", ".join(str(data.ids()[i]) for i in held_out[:5])
            raise UserError(f"{len(held_out)} id(s) of the forget list are in the validation "
                            f"split, which no model trains on: {shown}")  # fmt: skip
        tag = list_name
    elif forget_fraction is not None:
        forget_idx = random_share(data, float(forget_fraction), within_class, seed, validation)
        tag = forget_tag(None, forget_fraction, None)
        if within_class is not None:
            tag += f"-of-{data.classes[resolve_class(within_class, data.classes)]}"
    else:
        classes, forget_idx = class_samples(data, default_class if forget_class is None
                                            else forget_class)  # fmt: skip
        forget_idx = np.setdiff1d(forget_idx, validation)
        tag = forget_tag([data.classes[c] for c in classes], None, None)
    if len(forget_idx) == data.num_train - len(validation):
        raise UserError("the forget set is the whole training set; nothing would remain")
    trainable = np.setdiff1d(np.arange(data.num_train), validation)
    retain_idx = np.setdiff1d(trainable, forget_idx, assume_unique=True)
    return ForgetSplit(data, forget_idx, retain_idx, classes, tag,
                       from_list=forget_ids is not None, validation_idx=validation)  # fmt: skip


def validation_rows(data: ImageDataset, fraction: float) -> np.ndarray:
    """A fixed, stratified share of the training rows (at least one per class with two or more
    samples), the same for every run seed."""
    if fraction <= 0:
        return np.empty(0, dtype=np.int64)
    labels = data.y_train.numpy()
    rng = np.random.default_rng(VALIDATION_SEED)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def class_samples(data: ImageDataset, spec: object) -> tuple[tuple[int, ...], np.ndarray]:
    if spec is None:
        raise UserError("this dataset has no default class to forget: give forget_class, "
                        "forget_fraction or forget_indices_file")  # fmt: skip
    names = [spec] if isinstance(spec, str | int) else list(spec)
    if not names:
        raise UserError("forget_class is an empty list; name at least one class")
    classes = tuple(sorted({resolve_class(c, data.classes) for c in names}))
    forget_idx = np.flatnonzero(np.isin(data.y_train.numpy(), classes))
    if len(forget_idx) == 0:
        raise UserError(f"forget set is empty: no training samples of {names}")
    return classes, forget_idx


def random_share(data: ImageDataset, fraction: float, within: object, seed: int,
                 validation: np.ndarray) -> np.ndarray:  # fmt: skip
    if not 0.0 < fraction < 1.0:
        raise UserError(f"forget_fraction must be strictly between 0 and 1, got {fraction}")
    pool = np.arange(data.num_train)
    if within is not None:
        pool = np.flatnonzero(data.y_train.numpy() == resolve_class(within, data.classes))
    pool = np.setdiff1d(pool, validation)
    count = int(round(fraction * len(pool)))
    if count < 1 or count >= data.num_train:
        raise UserError(f"forget_fraction={fraction} selects {count} of {len(pool)} samples")
    return np.sort(np.random.default_rng(seed).choice(pool, size=count, replace=False))


def positions_of(data: ImageDataset, ids: Sequence) -> np.ndarray:
    """Training positions of the requested ids; unknown ids are an error, repeats a warning."""
    position = {str(i): p for p, i in enumerate(data.ids())}
    wanted = [str(i).strip() for i in ids]
    unknown = [i for i in wanted if i not in position]
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise UserError(f"{len(unknown)} id(s) of the forget list are not training samples of "
                        f"{data.name}: {shown}")  # fmt: skip
    if not wanted:
        raise UserError("the forget list is empty")
    unique = list(dict.fromkeys(wanted))
    if len(unique) < len(wanted):
        log.warning("the forget list names %d id(s) more than once; each is forgotten once",
                    len(wanted) - len(unique))  # fmt: skip
    return np.sort(np.array([position[i] for i in unique], dtype=np.int64))
