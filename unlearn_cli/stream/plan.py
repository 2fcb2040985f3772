"""A stream's steps resolved against the dataset: which training rows each request forgets, and
the split every step is judged on.

Everything that can be wrong with a stream is found here, before any training: an unknown class
or id, a class or id an earlier step already forgot (an error: a planned stream that asks for
the same data twice is a mistake in the plan, and forgetting it once would make that step's
request differ from what was written), an id of the validation split, and steps that together
leave nothing to retain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from unlearn_cli.data.dataset import ImageDataset
from unlearn_cli.data.forget_list import read_forget_list
from unlearn_cli.data.split import (
    ForgetSplit,
    class_samples,
    forget_tag,
    positions_of,
    resolve_class,
    validation_rows,
)
from unlearn_cli.errors import UserError
from unlearn_cli.fingerprint import short_hash
from unlearn_cli.stream.spec import RequestStep


@dataclass(frozen=True)
class Request:
    """One step's deletion request: the training rows it forgets, and the classes when it
    forgets whole classes."""

    tag: str
    forget_idx: np.ndarray
    classes: tuple[int, ...] = ()
    from_list: bool = False
    # A learn step instead: the pool rows that arrive and that the model trains on.
    learn_idx: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def is_learn(self) -> bool:
        return bool(len(self.learn_idx))


@dataclass(frozen=True)
class StreamPlan:
    """The requests in order, over one dataset and validation split."""

    data: ImageDataset
    requests: list[Request]  # a step each: a deletion request or a learn step
    validation_idx: np.ndarray
    # Training rows held out of the original (stream.pool): learn steps take them in.
    pool_idx: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def trainable_idx(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.data.num_train), self.validation_idx)

    def forgotten_by(self, k: int) -> np.ndarray:
        """Every row requests 1..k forget (k = 0: none)."""
        return union(r.forget_idx for r in self.requests[:k])

    def unseen_at(self, k: int) -> np.ndarray:
        """The pool rows no learn step 1..k has taken in: the model has never seen them."""
        return np.setdiff1d(self.pool_idx, union(r.learn_idx for r in self.requests[:k]))

    def known_at(self, k: int) -> np.ndarray:
        """The rows the model should know after step k: what it trained on, learned, and was
        not asked to forget."""
        gone = np.union1d(self.forgotten_by(k), self.unseen_at(k))
        return np.setdiff1d(self.trainable_idx, gone, assume_unique=True)

    def state_key(self, k: int) -> str:
        """What the model should know after step k, hashed (keys of resumable work)."""
        return short_hash([self.forgotten_by(k).tolist(), self.unseen_at(k).tolist()])

    def original_split(self) -> ForgetSplit:
        """The original's rows (everything trainable but the pool), as a split that forgets
        nothing: what the original is trained on, and under which cache key."""
        return ForgetSplit(self.data, np.empty(0, dtype=np.int64), self.known_at(0), (), "none",
                           validation_idx=self.validation_idx,
                           unseen_idx=self.pool_idx)  # fmt: skip

    def step_split(self, k: int) -> ForgetSplit:
        """Request k (1-based): forget it; retain what the model should know after it. Its
        oracle is retrained on that retain set (keyed by `removed_fingerprint`)."""
        request = self.requests[k - 1]
        before = tuple(c for r in self.requests[: k - 1] for c in r.classes)
        return ForgetSplit(self.data, request.forget_idx, self.known_at(k), request.classes,
                           request.tag, from_list=request.from_list,
                           validation_idx=self.validation_idx,
                           earlier_idx=self.forgotten_by(k - 1), forgotten_before=before,
                           unseen_idx=self.unseen_at(k))  # fmt: skip


def union(arrays) -> np.ndarray:
    rows = [np.asarray(a, dtype=np.int64) for a in arrays]
    return np.unique(np.concatenate(rows)) if rows else np.empty(0, dtype=np.int64)


def plan_stream(
    data: ImageDataset,
    steps: Sequence[RequestStep],
    seed: int,
    validation_fraction: float,
    pool: float | None = None,
) -> StreamPlan:
    """Resolve `steps` in order: random shares are drawn (seeded by `seed` and the step) from
    the rows the model knows and no earlier step forgot, so they are disjoint; `pool` (a share
    of the training set) is held out of the original for the learn steps."""
    validation = validation_rows(data, validation_fraction)
    trainable = np.setdiff1d(np.arange(data.num_train), validation)
    pool_idx = np.empty(0, dtype=np.int64)
    if pool is not None:
        size = int(round(pool * len(trainable)))
        if not 0 < size < len(trainable):
            raise UserError(f"stream.pool={pool} holds {size} of {len(trainable)} samples")
        pool_idx = np.sort(np.random.default_rng([seed, 7]).choice(trainable, size, replace=False))
    requests: list[Request] = []
    gone = np.empty(0, dtype=np.int64)
    unseen = pool_idx
    for k, step in enumerate(steps, 1):
        where = f"stream step {k}"
        if step.is_learn:
            request = learn_request(data, step, where, seed + 1000 * k, trainable, unseen)
            requests.append(request)
            unseen = np.setdiff1d(unseen, request.learn_idx)
            continue
        known = np.setdiff1d(trainable, unseen)
        request = resolve_step(data, step, where, seed + 1000 * k, known, gone, validation,
                               unseen)  # fmt: skip
        for j, earlier in enumerate(requests, 1):
            repeated = set(request.classes) & set(earlier.classes)
            if repeated:
                names = ", ".join(data.classes[c] for c in sorted(repeated))
                raise UserError(f"{where}: class {names} was already forgotten by step {j}")
            again = np.intersect1d(request.forget_idx, earlier.forget_idx)
            if len(again):
                shown = ", ".join(str(data.ids()[i]) for i in again[:5])
                raise UserError(f"{where}: {len(again)} sample(s) were already forgotten by step "
                                f"{j}: {shown}")  # fmt: skip
        if not len(request.forget_idx):
            raise UserError(f"{where}: earlier steps already forgot every sample it names")
        requests.append(request)
        gone = np.union1d(gone, request.forget_idx)
    if len(gone) >= len(np.setdiff1d(trainable, unseen)):
        raise UserError(f"the stream's {len(requests)} steps together forget the whole training "
                        "set; nothing would remain")  # fmt: skip
    return StreamPlan(data, requests, validation, pool_idx)


def learn_request(data: ImageDataset, step: RequestStep, where: str, seed: int,
                  trainable: np.ndarray, unseen: np.ndarray) -> Request:  # fmt: skip
    """`learn` of the training set, drawn from the pool rows no earlier step took in."""
    count = int(round(step.learn * len(trainable)))
    if count < 1:
        raise UserError(f"{where}: learn={step.learn} selects no sample of {len(trainable)}")
    if count > len(unseen):
        raise UserError(f"{where}: learn={step.learn} asks for {count} new samples; the pool "
                        f"holds {len(unseen)} not yet learned (raise stream.pool)")  # fmt: skip
    rows = np.sort(np.random.default_rng(seed).choice(unseen, size=count, replace=False))
    return Request(f"learn{step.learn}", np.empty(0, dtype=np.int64), learn_idx=rows)


def resolve_step(
    data: ImageDataset,
    step: RequestStep,
    where: str,
    seed: int,
    trainable: np.ndarray,
    gone: np.ndarray,
    validation: np.ndarray,
    unseen: np.ndarray,
) -> Request:
    """Request `step` over the `trainable` rows the model knows now (the pool's unseen rows
    are not among them)."""
    try:
        if step.forget_indices_file is not None:
            rows = positions_of(data, read_forget_list(step.forget_indices_file))
            for held, what in ((validation, "the validation split, which no model trains on"),
                               (unseen, "the pool, and no step has learned them yet")):  # fmt: skip
                held_out = np.intersect1d(rows, held)
                if len(held_out):
                    shown = ", ".join(str(data.ids()[i]) for i in held_out[:5])
                    raise UserError(f"{len(held_out)} id(s) are in {what}: {shown}")
            return Request(forget_tag(None, None, None, step.forget_indices_file), rows,
                           from_list=True)  # fmt: skip
        if step.forget_fraction is not None:
            return random_request(data, step, seed, trainable, gone)
        classes, rows = class_samples(data, step.forget_class)
        rows = np.setdiff1d(rows, np.union1d(np.union1d(validation, gone), unseen))  # none?
        return Request(forget_tag([data.classes[c] for c in classes], None, None), rows, classes)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def random_request(
    data: ImageDataset, step: RequestStep, seed: int, trainable: np.ndarray, gone: np.ndarray
) -> Request:
    """`forget_fraction` of the trainable rows (of one class with `forget_within`), drawn from
    those no earlier step forgot."""
    pool = trainable
    tag = forget_tag(None, step.forget_fraction, None)
    if step.forget_within is not None:
        label = resolve_class(step.forget_within, data.classes)
        pool = pool[data.y_train.numpy()[pool] == label]
        tag += f"-of-{data.classes[label]}"
    count = int(round(step.forget_fraction * len(pool)))
    left = np.setdiff1d(pool, gone)
    if count < 1:
        raise UserError(f"forget_fraction={step.forget_fraction} selects no sample of {len(pool)}")
    if count > len(left):
        raise UserError(f"forget_fraction={step.forget_fraction} asks for {count} samples; "
                        f"earlier steps left {len(left)}")  # fmt: skip
    rows = np.random.default_rng(seed).choice(left, size=count, replace=False)
    return Request(tag, np.sort(rows))
