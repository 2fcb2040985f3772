"""The method interface: `unlearn(model, split, ctx, opts) -> model`, and the registry of methods.

A method is a function registered under its name; its `opts` parameter is annotated with the
method's option schema (a frozen dataclass in the same module, see `unlearn_cli.options`), so the
signature tells what the method reads and the config node is checked against that schema before
any work starts.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from unlearn_cli.cost import Cost
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.options import Options, parse, targets_defaults
from unlearn_cli.registry import Registry
from unlearn_cli.training import train_options


@dataclass
class UnlearnContext:
    """What a method may use besides the model, the split and its options.

    `train_cfg` is the base model's training config (`TrainOptions`), `fresh_model` builds an
    untrained model of the same architecture and `predict_batch_size` is the evaluation's batch
    size for forward-only passes. Methods record their own figures (stopping reason, solver
    residuals, ...) in `metrics`; they land in metrics.json.
    """

    train_cfg: Any
    device: torch.device
    seed: int
    fresh_model: Callable[[], nn.Module]
    predict_batch_size: int = 1024
    metrics: dict[str, Any] = field(default_factory=dict)
    # Seconds of set-up a deployed system does before any deletion request (e.g. SISA's sharded
    # training); they are left out of the method's time_s.
    untimed_seconds: float = 0.0
    untimed_cost: Cost = field(default_factory=Cost)  # the sample passes of that set-up
    # Where the method's training loops keep epoch checkpoints to resume from after a kill
    # (the model cache's staging area); None: they keep none.
    checkpoint_dir: Path | None = None

    def checkpoint(self, name: str) -> Path | None:
        """The epoch-checkpoint path of the method's training loop `name`, or None."""
        return None if self.checkpoint_dir is None else self.checkpoint_dir / f"{name}.ckpt"

    def __post_init__(self) -> None:
        self.train_cfg = train_options(self.train_cfg)  # a `model.train` node becomes typed


class UnlearnMethod(Protocol):
    def __call__(
        self, model: nn.Module, split: ForgetSplit, ctx: UnlearnContext, opts: Any
    ) -> nn.Module: ...


METHODS: Registry[UnlearnMethod] = Registry("method")
log = logging.getLogger(__name__)
WHAT = {"class": "whole classes", "samples": "samples"}


def options_type(name: str) -> type[Options]:
    """The option schema of method `name`: the annotation of its `opts` parameter."""
    method = inspect.unwrap(METHODS.get(name))
    hints = typing.get_type_hints(method)
    if "opts" not in hints:
        raise TypeError(f"method {name} has no annotated `opts` parameter")
    return hints["opts"]


def method_options(node, targets: str | None = None) -> Options:
    """The typed options of the method config node `node` (its `name` picks the schema); with
    `targets` ("class" | "samples") its `auto` defaults become that scenario's."""
    return parse(options_type(node["name"]), node, "method", targets=targets)


def run_method(
    name: str,
    model: nn.Module,
    split: ForgetSplit,
    ctx: UnlearnContext,
    opts: Options | None = None,
) -> nn.Module:
    """Apply method `name` with `opts` (its schema's defaults when None), any `auto` of a
    per-scenario option resolved for what `split` forgets."""
    opts = options_type(name)() if opts is None else opts
    resolved = opts.for_targets(split.targets)
    if resolved is not opts:
        resolved.check("method")
    return METHODS.get(name)(model, split, ctx, resolved)


def log_method_defaults(node, opts: Options, targets: str) -> None:
    """Say which per-scenario defaults a run uses, and warn when the method is documented as
    unsuited to what it forgets (no setting beat doing nothing on the tuning seeds)."""
    chosen = [
        f"{k}={getattr(opts, k)}" for k in targets_defaults(type(opts)) if node.get(k) == "auto"
    ]
    if chosen:
        log.info("%s defaults for forgetting %s: %s (tuned on the seeds of docs/benchmark.md)",
                 node["name"], WHAT[targets], ", ".join(chosen))  # fmt: skip
    reason = type(opts).unsuited.get(targets)
    if reason:
        log.warning("%s is not suited to forgetting %s: %s", node["name"], WHAT[targets], reason)
