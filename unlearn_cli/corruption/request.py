"""A run's corrective request: the manipulated data, the pair a confusion swaps, the split."""

from __future__ import annotations

import logging

import torch

from unlearn_cli.corruption.manipulate import (
    check_corruptible,
    corrupt,
    corrupted_split,
    most_confused_pair,
    without_every_manipulated,
)
from unlearn_cli.data import ForgetSplit, ImageDataset
from unlearn_cli.data.split import validation_rows
from unlearn_cli.inference import predict_logits
from unlearn_cli.validate import RunConfig

log = logging.getLogger(__name__)


def corrective_split(config: RunConfig, data: ImageDataset, device: torch.device) -> ForgetSplit:
    """The split of a corrective run: the training data manipulated, the request the identified
    rows. `classes=auto` asks the clean original (trained, or read from the model cache) which
    two classes it confuses most on the validation split."""
    opts, run = config.run.corruption, config.run
    check_corruptible(data, opts)  # before the clean original `auto` may train
    validation = validation_rows(data, run.validation_fraction)
    pair = None
    if opts.kind == "confusion":
        pair = confused_pair(config, data, validation, device) if opts.classes == "auto" \
            else tuple(resolve(c, data) for c in opts.classes)  # fmt: skip
    corrupted, manipulation = corrupt(data, opts, run.seed, validation, pair)
    split = corrupted_split(corrupted, manipulation, validation, opts)
    what = f"target {data.classes[manipulation.target]}" if opts.kind == "poison" else \
        "classes " + " and ".join(data.classes[c] for c in manipulation.classes)  # fmt: skip
    log.info("%s: %d training samples manipulated (%s); the request names %d of them, %d stay in "
             "the retain set", opts.kind, len(manipulation.rows), what,
             len(manipulation.identified), len(manipulation.left))  # fmt: skip
    return split


def resolve(name: object, data: ImageDataset) -> int:
    from unlearn_cli.data.split import resolve_class

    return resolve_class(name, data.classes)


def confused_pair(config: RunConfig, data: ImageDataset, validation, device) -> tuple[int, int]:
    """The two classes the clean original mixes up most on the validation split."""
    import numpy as np

    from unlearn_cli.run_models import Workshop, the_original

    trainable = np.setdiff1d(np.arange(data.num_train), validation)
    clean = ForgetSplit(data, trainable[:1], trainable[1:], (), "clean", validation_idx=validation)
    original, _ = the_original(Workshop(config, clean, device), None)
    x, y = data.x_train[torch.as_tensor(validation)], data.y_train[torch.as_tensor(validation)]
    logits = predict_logits(original.to(device), x, device, config.evaluation.options.batch_size)
    pair = most_confused_pair(logits.cpu(), y, data.num_classes)
    log.info("confusion: the clean original confuses %s and %s most (validation split)",
             *(data.classes[c] for c in pair))  # fmt: skip
    return pair


__all__ = ["corrective_split", "without_every_manipulated"]
