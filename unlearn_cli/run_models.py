"""The models a run compares, built in three named steps: the original (trained and cached,
or the user's own), the references (the retrained model, and the noise floor's retraining with
the next seed) and the timed unlearning of the original (unlearning.py).

`build_models` calls them in that order; `Workshop` holds what they share: fresh models of the
run's architecture, method contexts and the model cache under the key parts every entry shares.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from unlearn_cli.cache import CachedModel, ModelCache, cache_key, model_key
from unlearn_cli.corruption.manipulate import without_every_manipulated
from unlearn_cli.cost import Cost, attach_counter
from unlearn_cli.curves import recording
from unlearn_cli.data import ForgetSplit, ImageDataset
from unlearn_cli.data.builders import dataset_key
from unlearn_cli.fingerprint import short_hash
from unlearn_cli.methods import (
    UnlearnContext,
    memorised_options,
    note_memorised_original,
    run_method,
)
from unlearn_cli.models import build_model
from unlearn_cli.models.checkpoint import read_metadata
from unlearn_cli.models.state_files import load_original
from unlearn_cli.options import Options
from unlearn_cli.record import method_options
from unlearn_cli.stream.history import KEY as HISTORY_KEY
from unlearn_cli.training import train_classifier
from unlearn_cli.unlearning import Unlearning, gives_finite_outputs, timed_unlearning
from unlearn_cli.validate import RunConfig

log = logging.getLogger(__name__)


@dataclass
class GivenOriginal:
    """The user's own original model (`original.checkpoint`): nothing trains it."""

    model: nn.Module
    sha256: str
    # What it already forgot (its checkpoint's `forgotten` entry; stream/history.py), or None.
    history: dict | None = None


@dataclass
class BuiltModels:
    """What `build_models` hands back: the models by role (original, retrain, unlearned, and
    retrain_other_seed for the noise floor), their wall seconds and counted sample passes, the
    method's own figures, and the options the method ran with (the memorising-original defaults
    where they replaced the samples ones)."""

    models: dict[str, nn.Module]
    seconds: dict[str, float | None]
    method_metrics: dict
    counts: dict[str, Cost | None]
    ran_with: Options
    split: ForgetSplit  # the one the models were built for (a request extended by its copies)


def given_original(config: RunConfig, data: ImageDataset) -> GivenOriginal | None:
    path = config.run.original.checkpoint
    if path is None:
        return None
    model = build_model(config.model, data.input_shape, data.num_classes, config.run.seed,
                        pretrained=False)  # fmt: skip
    path = Path(path).expanduser()
    digest = load_original(model, path, data.classes)  # its .json checked there
    log.info("original: %s (sha256 %s), not trained here", path, digest[:12])
    meta = path.with_suffix(".json")
    history = None
    if path.suffix == ".safetensors" and meta.is_file():
        history = read_metadata(path).get(HISTORY_KEY)
    return GivenOriginal(attach_counter(model), digest, history)


def build_models(
    config: RunConfig,
    split: ForgetSplit,
    device: torch.device,
    given: GivenOriginal | None = None,
    after_original: Callable[[nn.Module], ForgetSplit] | None = None,
) -> BuiltModels:
    """The original (cached, or the user's `given` one), the retrained reference (cached) and
    the unlearned model, with their wall seconds, the method's own figures, the counted sample
    passes of each and the options the method ran with.

    With `evaluation.noise_floor` a model retrained with the next seed joins them: how far two
    exact retrainings lie apart, the level below which no method can be told from retraining.
    With `evaluation.reference=none` nothing is retrained: there is no "retrain" model.
    `after_original` sees the original before anything else is built and gives the split to
    build them for (the copy scan: request.copies).
    """
    workshop = Workshop(config, split, device)
    original, cache_info = the_original(workshop, given)
    if after_original is not None:
        split = after_original(original)
        workshop = Workshop(config, split, device)  # the same key parts: the original's stay
    evaluation = config.evaluation.options
    reference = None
    if evaluation.reference == "retrain":
        reference = workshop.retrained(config.run.seed, original)
    if config.method.name == "retrain" and reference is not None:
        # The reference *is* this method's result; its cost is the measured retraining cost.
        done = Unlearning(reference.model, reference.train_seconds, reference.cost)
        ctx, ran_with = workshop.context(), config.method.options
    else:
        done, ctx, ran_with = unlearn_the_original(workshop, original, given)
    models = {"original": original, "unlearned": done.model}
    seconds: dict[str, float | None] = {"original": None, "unlearned": done.seconds}
    counts: dict[str, Cost | None] = {"original": None, "unlearned": done.cost}
    name = config.method.name
    if reference is None:
        log.info("%s took %.2fs, %d sample passes (no retrained reference: "
                 "evaluation.reference=none)", name, done.seconds, done.cost.units)  # fmt: skip
    else:
        log.info("%s took %.2fs, %d sample passes (retrain: %.2fs, %d)", name, done.seconds,
                 done.cost.units, reference.train_seconds, reference.cost.units)  # fmt: skip
        models["retrain"], seconds["retrain"] = reference.model, reference.train_seconds
        counts["retrain"] = reference.cost
        if evaluation.noise_floor:
            models["retrain_other_seed"] = workshop.retrained(config.run.seed + 1, original).model
            seconds["retrain_other_seed"], counts["retrain_other_seed"] = None, None
        if split.corruption is not None:  # the model the user wanted: no manipulated sample
            wanted = Workshop(config, without_every_manipulated(split), workshop.device)
            models["retrain_clean"] = wanted.retrained(config.run.seed, original).model
            seconds["retrain_clean"], counts["retrain_clean"] = None, None
        cache_info.update(retrain_hit=reference.hit,
                          retrain_time_measured="this run" if not reference.hit
                          else "when its cache entry was made")  # fmt: skip
    if ctx.untimed_seconds:
        ctx.metrics.update(setup_seconds=ctx.untimed_seconds, setup_cost=ctx.untimed_cost.as_dict())
    order = ("original", "retrain", "retrain_clean", "unlearned", "retrain_other_seed")
    models = {k: models[k].to(device) for k in order if k in models}
    return BuiltModels(models, seconds, {**ctx.metrics, **cache_info}, counts, ran_with, split)


class Workshop:
    """What every model of a run is made with: fresh models of the run's architecture, method
    contexts, and the model cache under the key parts they all share."""

    def __init__(self, config: RunConfig, split: ForgetSplit, device: torch.device) -> None:
        self.config, self.split, self.device = config, split, device
        self.cache = ModelCache(config.run.cache_dir)
        self.base_key = {
            "dataset": dataset_key(config.dataset, split.data),
            "model": model_key(config.model),
            "seed": config.run.seed,
            "device_type": device.type,
            "validation": split.validation_fingerprint(),
        }
        if len(split.unseen_idx):  # a stream's pool: rows no model here has seen yet
            self.base_key["unseen"] = short_hash(sorted(split.unseen_idx.tolist()))

    def fresh(self, seed: int | None = None) -> nn.Module:
        data, seed = self.split.data, self.config.run.seed if seed is None else seed
        return attach_counter(build_model(self.config.model, data.input_shape, data.num_classes,
                                          seed))  # fmt: skip

    def context(self, seed: int | None = None, staging: Path | None = None) -> UnlearnContext:
        seed = self.config.run.seed if seed is None else seed
        return UnlearnContext(self.config.model.options.train, self.device, seed,
                              lambda: self.fresh(seed),
                              self.config.evaluation.options.batch_size,
                              checkpoint_dir=staging)  # fmt: skip

    def retrained(self, seed: int, original: nn.Module) -> CachedModel:
        """A reference: the method `retrain` on `original`, i.e. a model trained from scratch
        without the forget set, with `seed` (cached)."""
        key = {**self.base_key, "seed": seed, "forget": self.split.removed_fingerprint()}

        def train(staging: Path) -> nn.Module:
            return run_method("retrain", original, self.split, self.context(seed, staging))

        return self.cache.get_or_train("retrain", key, lambda: self.fresh(seed), train)


def the_original(workshop: Workshop, given: GivenOriginal | None) -> tuple[nn.Module, dict]:
    """The model to unlearn: the user's `given` one, else trained on the trainable rows (cached);
    with what the record says about where it came from."""
    if given is not None:
        return given.model, {"original_checkpoint_sha256": given.sha256}
    config, split, data = workshop.config, workshop.split, workshop.split.data

    def train(staging: Path) -> nn.Module:
        model = workshop.fresh()
        train_classifier(model, data.x_train, data.y_train, config.model.options.train,
                         workshop.device, config.run.seed, "original", rows=split.trainable_idx,
                         feed=data.feed, checkpoint=staging / "original.ckpt")  # fmt: skip
        return model

    original = workshop.cache.get_or_train("original", workshop.base_key, workshop.fresh, train)
    return original.model, {"original_hit": original.hit}


def unlearn_the_original(
    workshop: Workshop, original: nn.Module, given: GivenOriginal | None
) -> tuple[Unlearning, UnlearnContext, Options]:
    """The run's method applied to a copy of `original` (timed), with its context and the
    options it ran with: the memorising-original defaults where the original memorises."""
    config, split, device = workshop.config, workshop.split, workshop.device
    method, batch = config.method, config.evaluation.options.batch_size
    original = original.to(device)  # every model of the run ends there; the check runs there
    memorising = note_memorised_original(method.name, method.options, original, split, device,
                                         batch)  # fmt: skip
    opts = memorised_options(method) if memorising.get("original_memorises") else method.options
    done, ctx = unlearn_model(workshop, original, split, opts, {"original": given and given.sha256})
    ctx.metrics.update(memorising)
    return done, ctx, opts


def unlearn_model(
    workshop: Workshop, start: nn.Module, split: ForgetSplit, opts: Options, key: dict
) -> tuple[Unlearning, UnlearnContext]:
    """The run's method with `opts` removes `split`'s forget set from a copy of `start` (timed):
    a run's original, or the model a stream's previous step left. `key` tells apart the
    starting models in the key of the method's resumable training loops."""
    config, device = workshop.config, workshop.device
    method = config.method
    model = copy.deepcopy(start).to(device)
    # The method's own training loops (SISA's shards) resume from here after a kill.
    method_key = {**workshop.base_key, "forget": split.fingerprint(), **key,
                  "method": method_options(method, opts)}  # fmt: skip
    staging = workshop.cache.staging_dir(f"method-{method.name}-{cache_key(method_key)}")
    ctx = workshop.context(staging=staging)
    with recording("unlearned"):  # the method's own loops' losses (curves.csv)
        done = timed_unlearning(method.name, opts, model, split, ctx)
    shutil.rmtree(staging, ignore_errors=True)  # finished: nothing left to resume
    if not gives_finite_outputs(done.model, split, device):
        # The method left NaN/inf weights or outputs that its own guard (if any) did not catch:
        # the last good weights are those it started from.
        log.warning("%s left non-finite weights or outputs; keeping the model it started from",
                    method.name)  # fmt: skip
        done.model = copy.deepcopy(start).to(device)
        ctx.metrics["diverged"] = True
    return done, ctx
