"""The method interface: `unlearn(model, split, ctx, opts) -> model`, and the registry of methods.

A method is a function registered under its name; its `opts` parameter is annotated with the
method's option schema (a frozen dataclass in the same module, see `unlearn_cli.options`), so the
signature tells what the method reads and the config node is checked against that schema before
any work starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from unlearn_cli.cost import Cost
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.inference import accuracy, predict_logits
from unlearn_cli.options import Options, memorised_defaults, parse, targets_defaults
from unlearn_cli.registry import Choice, Registry
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
    return METHODS.schema(name)


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


def left_auto(method: Choice, fields) -> list[str]:
    """The `fields` the run's method options leave to their per-scenario defaults (`auto`)."""
    written = method.as_written or method.options
    return [k for k in fields if getattr(written, k) == "auto"]


def log_method_defaults(method: Choice, targets: str) -> None:
    """Say which per-scenario defaults a run uses, and warn when the method is documented as
    unsuited to what it forgets (no setting beat doing nothing on the tuning seeds)."""
    opts = method.options
    chosen = [f"{k}={getattr(opts, k)}" for k in left_auto(method, targets_defaults(type(opts)))]
    if chosen:
        log.info("%s defaults for forgetting %s: %s (tuned on the seeds of docs/benchmark.md)",
                 method.name, WHAT[targets], ", ".join(chosen))  # fmt: skip
    reason = type(opts).unsuited.get(targets)
    if reason:
        log.warning("%s is not suited to forgetting %s: %s", method.name, WHAT[targets], reason)


# An original "memorises" when it fits (nearly) every training sample it was given and fewer of
# the held-out validation split: random forget samples are then ones it knows by heart, unlike a
# retrained model (the benchmark's memorising variant: train 100%, test about 92%; the full one
# trains to 98.4%). The gap is small because the validation split is (5% of 2,000 = 100 images
# there, which read 95-99% on the tuning seeds): it only rules out a task every model solves.
MEMORISED_TRAIN_ACC = 99.5
MEMORISED_GAP = 1.0
MEMORISED_PROBE = 2000  # retain samples whose accuracy stands for the training accuracy


def note_memorised_original(
    name: str, opts: Options, original: nn.Module, split: ForgetSplit, device: torch.device,
    batch_size: int,
) -> dict[str, Any]:  # fmt: skip
    """For a run that forgets samples: whether `original` memorises its training data (its
    accuracy on retain samples vs the validation split), warning when method `name` is
    documented not to forget on such a model. Returns the figures for metrics.json."""
    if split.targets != "samples" or not len(split.validation_idx):
        return {}
    rows = torch.as_tensor(split.retain_idx[:MEMORISED_PROBE])
    train_acc = accuracy(predict_logits(original, split.data.x_train[rows], device, batch_size),
                         split.data.y_train[rows])  # fmt: skip
    x, y = split.validation
    validation_acc = accuracy(predict_logits(original, x, device, batch_size), y)
    gap = round(train_acc - validation_acc, 3)  # float32 percentages: 100 - 99.00000095 is 1
    memorises = train_acc >= MEMORISED_TRAIN_ACC and gap >= MEMORISED_GAP
    reason = type(opts).unsuited_memorising
    if memorises:
        what = (f"the original memorises its training data (train accuracy {train_acc:.1f}%, "
                f"validation {validation_acc:.1f}%)")  # fmt: skip
        if reason:
            log.warning("%s: %s's samples defaults do not forget on such a model: %s", what, name,
                        reason)  # fmt: skip
        else:
            log.info("%s", what)
    return {"original_train_acc": train_acc, "original_validation_acc": validation_acc,
            "original_memorises": memorises}  # fmt: skip


def memorised_options(method: Choice) -> Options:
    """The method's options with the memorising-original defaults of the fields it leaves `auto`
    (`by_targets(..., memorised=)`), for a run that forgets samples from an original that
    memorises; its options themselves when none applies."""
    opts = method.options
    fields = left_auto(method, memorised_defaults(type(opts)))
    if not fields:
        return opts
    resolved = (method.as_written or opts).for_targets("samples", memorised=True)
    if not resolved.has_auto():
        resolved.check("method")
    log.info("%s defaults for forgetting samples from an original that memorises: %s",
             method.name, ", ".join(f"{k}={getattr(resolved, k)}" for k in fields))  # fmt: skip
    return resolved
