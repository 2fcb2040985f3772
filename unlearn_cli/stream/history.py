"""What a model has forgotten, carried with its checkpoint.

Every unlearned checkpoint records the training samples it no longer knows (`forgotten` in its
.json: this request's and the earlier ones'). A run whose `original.checkpoint` is such a model
knows that history: its retain set and its oracle leave out every earlier request too, it reports
UA on them (`UA_earlier`), and samples of its request that an earlier one already removed are
forgotten once, with a warning (the request is the user's, not a plan: it may repeat an id).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from unlearn_cli.data.split import ForgetSplit, positions_of, resolve_class
from unlearn_cli.errors import UserError

log = logging.getLogger(__name__)

KEY = "forgotten"  # the checkpoint metadata's entry


def forgotten_record(split: ForgetSplit) -> dict:
    """The checkpoint's `forgotten` entry for a model that unlearned `split` (and its history)."""
    data = split.data
    classes = sorted({*split.forget_classes, *split.forgotten_before})
    return {
        "dataset": data.name,
        "num_train": int(data.num_train),
        "ids": [str(data.ids()[i]) for i in split.removed_idx],
        "classes": [data.classes[c] for c in classes],
        # a stream's pool rows the model never learned: not forgotten, never seen
        "never_seen": [str(data.ids()[i]) for i in split.unseen_idx],
    }


def with_history(split: ForgetSplit, history: dict | None) -> ForgetSplit:
    """`split` for a model that already forgot `history` (a checkpoint's `forgotten` entry)."""
    if not history or not history.get("ids"):
        return split
    data = split.data
    where = "original.checkpoint"
    if history.get("dataset") != data.name or history.get("num_train") != data.num_train:
        raise UserError(f"{where} forgot samples of {history.get('dataset')} "
                        f"({history.get('num_train')} training samples); this run is on "
                        f"{data.name} ({data.num_train})")  # fmt: skip
    try:
        earlier = positions_of(data, history["ids"])
        never = positions_of(data, history["never_seen"]) if history.get("never_seen") else \
            np.empty(0, dtype=np.int64)  # fmt: skip
        classes = tuple(sorted(resolve_class(c, data.classes) for c in history["classes"]))
    except UserError as exc:
        raise UserError(f"{where}'s record of what it forgot: {exc}") from None
    again = np.intersect1d(split.forget_idx, earlier)
    unseen = np.intersect1d(split.forget_idx, never)
    if len(unseen):
        raise UserError(f"{len(unseen)} id(s) of this request were never seen by "
                        f"{where} (held out of it, never learned)")  # fmt: skip
    forget = np.setdiff1d(split.forget_idx, earlier)
    if not len(forget):
        raise UserError(f"{where} already forgot every sample of this request")
    if len(again):
        log.warning("%d sample(s) of this request were already forgotten by %s; each is "
                    "forgotten once (this run forgets the other %d)", len(again), where,
                    len(forget))  # fmt: skip
    log.info("%s already forgot %d sample(s)%s: they stay out of the retain set and the "
             "oracle, and UA_earlier measures them", where, len(earlier),
             f" (classes {', '.join(history['classes'])})" if classes else "")  # fmt: skip
    return dataclasses.replace(
        split,
        forget_idx=forget,
        retain_idx=np.setdiff1d(split.retain_idx, np.union1d(earlier, never)),
        validation_idx=np.setdiff1d(split.validation_idx, earlier),
        earlier_idx=earlier,
        forgotten_before=tuple(c for c in classes if c not in split.forget_classes),
        unseen_idx=never,
    )
