"""Pieces several methods share: forget-accuracy targets, batch streams, a divergence guard."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator

import torch
from torch import nn

from unlearn_cli.data.feed import batch_stream
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.inference import accuracy, predict_logits
from unlearn_cli.methods.base import UnlearnContext

log = logging.getLogger(__name__)


def forget_accuracy(model: nn.Module, split: ForgetSplit, ctx: UnlearnContext) -> float:
    x, y = split.forget
    return accuracy(predict_logits(model, x, ctx.device, ctx.predict_batch_size), y)


def forget_target(model: nn.Module, split: ForgetSplit, ctx: UnlearnContext, target) -> float:
    """The forget accuracy at which unlearning should stop.

    `auto`: what a retrained model shows. For class forgetting it never predicts the forgotten
    class, so 0; for forgotten samples they are unseen data to it, so about the model's own
    accuracy on unseen data: measured now, on the untouched model, on the validation split
    (never on the test set, which is for evaluation only).
    """
    if target != "auto":
        return float(target)
    if split.targets == "class":
        return 0.0
    x, y = split.validation
    return accuracy(predict_logits(model, x, ctx.device, ctx.predict_batch_size), y)


def endless_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches of in-memory tensors that never run out (fresh order every pass)."""
    return batch_stream(x, y, batch_size, generator, y.device, endless=True)


def retain_batches(
    split: ForgetSplit, device: torch.device, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless retain batches on the device, streamed from disk when the dataset is."""
    data = split.data
    return batch_stream(data.x_train, data.y_train, batch_size, generator, device, data.feed,
                        rows=split.retain_idx, endless=True)  # fmt: skip


def is_finite_model(model: nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


class DivergenceGuard:
    """Keeps the last good weights and restores them when a loss or weight stops being finite."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.good = copy.deepcopy(model.state_dict())
        self.diverged = False

    def check(self, loss: torch.Tensor | float) -> bool:
        """True if training may go on; on divergence restore the last good weights, return False."""
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if math.isfinite(value) and is_finite_model(self.model):
            return True
        log.warning("non-finite loss or weights (loss %s): restoring the last good weights", value)
        self.model.load_state_dict(self.good)
        self.diverged = True
        return False

    def commit(self) -> None:
        """Remember the current weights as good."""
        self.good = copy.deepcopy(self.model.state_dict())


def freeze_norm_layers(model: nn.Module) -> None:
    """Put batch-norm layers in eval mode: forget-only batches must not rewrite running stats."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def to_train_mode(model: nn.Module, device: torch.device, freeze_norm: bool) -> None:
    """Move the model to the run's device in train mode, batch norm frozen if asked."""
    model.to(device).train()
    if freeze_norm:
        freeze_norm_layers(model)


def forget_and_retain_batches(
    split: ForgetSplit, device: torch.device, batch_size: int, generator: torch.Generator
) -> tuple[Iterator, Iterator]:
    """Endless shuffled batch streams over the forget and the retain set, on the device."""
    forget = endless_batches(*(t.to(device) for t in split.forget), batch_size, generator)
    return forget, retain_batches(split, device, batch_size, generator)
