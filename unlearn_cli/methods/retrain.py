"""retrain: exact unlearning, training from scratch on the retain set alone (the gold standard)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.methods.base import METHODS, UnlearnContext
from unlearn_cli.options import Options
from unlearn_cli.training import train_classifier


@dataclass(frozen=True)
class RetrainOptions(Options):
    """None: retraining uses the model's own `model.train` settings."""


@METHODS.register("retrain")
def retrain(
    model: nn.Module, split: ForgetSplit, ctx: UnlearnContext, opts: RetrainOptions
) -> nn.Module:
    """Ignore the trained `model`; train a fresh one on retain samples only."""
    fresh = ctx.fresh_model()
    data = split.data
    result = train_classifier(
        fresh, data.x_train, data.y_train, ctx.train_cfg, ctx.device, ctx.seed, "retrain",
        rows=split.retain_idx, feed=data.feed, checkpoint=ctx.checkpoint("retrain"),
    )  # fmt: skip
    ctx.metrics["train_seconds"] = result.seconds
    return fresh
