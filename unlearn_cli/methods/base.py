"""The method interface: `unlearn(model, split, ctx) -> model`, and the registry of methods."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from omegaconf import DictConfig
from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.registry import Registry


@dataclass
class UnlearnContext:
    """What a method may use besides the model and the split.

    `cfg` is the method's own config, `train_cfg` the base model's training config, and
    `fresh_model` builds an untrained model of the same architecture. Methods record their own
    figures (stopping reason, solver residuals, ...) in `metrics`; they land in metrics.json.
    """

    cfg: DictConfig
    train_cfg: DictConfig
    device: torch.device
    seed: int
    fresh_model: Callable[[], nn.Module]
    metrics: dict[str, Any] = field(default_factory=dict)
    # Seconds of set-up a deployed system does before any deletion request (e.g. SISA's sharded
    # training); they are left out of the method's time_s.
    untimed_seconds: float = 0.0


class UnlearnMethod(Protocol):
    def __call__(self, model: nn.Module, split: ForgetSplit, ctx: UnlearnContext) -> nn.Module: ...


METHODS: Registry[UnlearnMethod] = Registry("method")
