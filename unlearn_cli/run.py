"""One experiment, top to bottom: seed -> data -> base model -> method -> evaluate -> write.

`run_experiment` is the story; the models it compares are built in three named steps below it:
the original (trained, cached, or the user's own), the references (the retrained model and the
noise floor's second retraining) and the timed unlearning of the original (unlearning.py).
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from unlearn_cli.cache import CachedModel, ModelCache, cache_key, model_key
from unlearn_cli.console import out_console
from unlearn_cli.cost import Cost, attach_counter
from unlearn_cli.data import ForgetSplit, ImageDataset, load_dataset
from unlearn_cli.data.builders import dataset_key
from unlearn_cli.data.spec import forget_tag_of, split_from_config
from unlearn_cli.device import resolve_device, resolve_threads
from unlearn_cli.errors import TrainingDiverged, UserError, first_line
from unlearn_cli.evaluation.evaluate import evaluate_models, evidence_verdict
from unlearn_cli.evaluation.lira import add_lira, add_ulira
from unlearn_cli.evaluation.metrics import UTILITY_POINTS
from unlearn_cli.evaluation.plots import confidence_histograms, per_class_accuracy_plot
from unlearn_cli.evaluation.tables import metrics_by_model_table, models_frame, write_csv
from unlearn_cli.methods import (
    METHODS,
    UnlearnContext,
    log_method_defaults,
    memorised_options,
    note_memorised_original,
    options_type,
    run_method,
)
from unlearn_cli.models import build_model, save_checkpoint
from unlearn_cli.models.state_files import load_original
from unlearn_cli.options import Options
from unlearn_cli.record import RunRecord, method_options
from unlearn_cli.training import train_classifier
from unlearn_cli.unlearning import (
    Unlearning,
    gives_finite_outputs,
    seed_everything,
    timed_unlearning,
)
from unlearn_cli.validate import RunConfig

log = logging.getLogger(__name__)

__all__ = ["build_models", "run_experiment", "seed_everything"]


def run_experiment(config: RunConfig, run_dir: Path | str) -> dict:
    """Run the experiment `config` and write its outputs into `run_dir`; return metrics.json's
    data."""
    run_dir, run = Path(run_dir), config.run
    device = resolve_device(run.device)
    torch.set_num_threads(resolve_threads(run.threads))
    seed_everything(run.seed)
    tag = forget_tag_of(config)
    data = load_dataset(config.dataset, run.cache_dir)
    split = split_from_config(data, config)
    # Options that depend on the architecture (e.g. influence's dense Hessian size), and a
    # user's checkpoint, are checked before anything is trained.
    probe = build_model(config.model, data.input_shape, data.num_classes, 0)
    check_input_shape(probe, data.input_shape, config.model.name)
    config.method.options.check_model(probe)
    given = given_original(config, data)
    record = RunRecord(run_dir, config, tag)
    record.update(split=split.describe(), device=str(device))
    if given is not None:
        record.update(original_checkpoint={"path": run.original.checkpoint,
                                           "sha256": given.sha256})  # fmt: skip
    log_run(config, split, device)
    log_method_defaults(config.method, split.targets)
    try:
        built = build_models(config, split, device, given)
        models, method_metrics, ran_with = built.models, built.method_metrics, built.ran_with
        if ran_with is not config.method.options:  # memorising-original defaults replaced them
            record.set_method(config.method, ran_with)
        evaluation = config.evaluation.options
        rows, details, confidences = evaluate_models(
            models, built.seconds, split, device, evaluation, run.seed, built.counts
        )
        if "setup_seconds" in method_metrics:  # SISA: set-up before any deletion request
            rows["unlearned"]["setup_s"] = method_metrics["setup_seconds"]
        if evaluation.lira is not None:
            add_lira(rows, models, split, config, device)
        if config.evaluation.name == "ulira":  # its shadow pairs unlearn as this run did
            ran = replace(config, method=replace(config.method, options=ran_with))
            method_metrics.update(add_ulira(rows, models, split, ran, device))
        if evaluation.plots:
            write_plots(run_dir / "plots", details, confidences, split, config.method.name)
        write_outputs(run_dir, models["unlearned"], rows, config, split)
        status = "diverged" if method_metrics.get("diverged") else "completed"
        if status == "diverged":
            log.warning("%s diverged: the unlearned model is its last good weights; the result "
                        "is not trustworthy", config.method.name)  # fmt: skip
        record.finish(status, models=rows, method_metrics=method_metrics, **details)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, a kill, or submitit's requeue exit
        record.try_finish("interrupted")
        raise
    except TrainingDiverged as exc:
        record.try_finish("diverged", error=str(exc))
        raise
    except Exception as exc:
        record.try_finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return record.data


def log_run(config: RunConfig, split: ForgetSplit, device: torch.device) -> None:
    judged = "; a forget list, judged like random samples" if split.scenario == "list" else ""
    log.info(
        "%s on %s/%s: forget %s (%d samples%s), retain %d, validation %d, device %s",
        config.method.name,
        config.dataset.name,
        config.model.name,
        split.tag,
        len(split.forget_idx),
        judged,
        len(split.retain_idx),
        len(split.validation_idx),
        device,
    )


def role_labels(method: str) -> dict[str, str]:
    return {
        "original": "original",
        "retrain": "retrain",
        "retrain_other_seed": "retrain, other seed",
        "unlearned": f"unlearned ({method})",
    }


@dataclass
class GivenOriginal:
    """The user's own original model (`original.checkpoint`): nothing trains it."""

    model: nn.Module
    sha256: str


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


def given_original(config: RunConfig, data: ImageDataset) -> GivenOriginal | None:
    path = config.run.original.checkpoint
    if path is None:
        return None
    model = build_model(config.model, data.input_shape, data.num_classes, config.run.seed,
                        pretrained=False)  # fmt: skip
    digest = load_original(model, Path(path).expanduser(), data.classes)
    log.info("original: %s (sha256 %s), not trained here", path, digest[:12])
    return GivenOriginal(attach_counter(model), digest)


def check_input_shape(model: nn.Module, shape: tuple[int, ...], name: str) -> None:
    """One forward pass on two blank images: an architecture that cannot take the dataset's
    image size (e.g. a ViT's fixed 224x224) fails here, before any training."""
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, *shape))
    except (RuntimeError, ValueError, AssertionError, TypeError) as exc:  # ViT asserts sizes
        reason = first_line(exc)
        raise UserError(
            f"model={name} cannot take {'x'.join(map(str, shape))} inputs "
            f"({reason}); change dataset.image_size or the model"
        ) from None


def build_models(
    config: RunConfig, split: ForgetSplit, device: torch.device, given: GivenOriginal | None = None
) -> BuiltModels:
    """The original (cached, or the user's `given` one), the retrained reference (cached) and
    the unlearned model, with their wall seconds, the method's own figures, the counted sample
    passes of each and the options the method ran with.

    With `evaluation.noise_floor` a model retrained with the next seed joins them: how far two
    exact retrainings lie apart, the level below which no method can be told from retraining.
    With `evaluation.reference=none` nothing is retrained: there is no "retrain" model.
    """
    workshop = Workshop(config, split, device)
    original, cache_info = the_original(workshop, given)
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
        cache_info.update(retrain_hit=reference.hit,
                          retrain_time_measured="this run" if not reference.hit
                          else "when its cache entry was made")  # fmt: skip
    if ctx.untimed_seconds:
        ctx.metrics.update(setup_seconds=ctx.untimed_seconds, setup_cost=ctx.untimed_cost.as_dict())
    order = ("original", "retrain", "unlearned", "retrain_other_seed")
    models = {k: models[k].to(device) for k in order if k in models}
    return BuiltModels(models, seconds, {**ctx.metrics, **cache_info}, counts, ran_with)


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
        key = {**self.base_key, "seed": seed, "forget": self.split.fingerprint()}

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
    model = copy.deepcopy(original).to(device)
    memorising = note_memorised_original(method.name, method.options, model, split, device, batch)
    opts = memorised_options(method) if memorising.get("original_memorises") else method.options
    # The method's own training loops (SISA's shards) resume from here after a kill.
    method_key = {**workshop.base_key, "forget": split.fingerprint(),
                  "original": given and given.sha256,
                  "method": method_options(method, opts)}  # fmt: skip
    staging = workshop.cache.staging_dir(f"method-{method.name}-{cache_key(method_key)}")
    ctx = workshop.context(staging=staging)
    ctx.metrics.update(memorising)
    done = timed_unlearning(method.name, opts, model, split, ctx)
    shutil.rmtree(staging, ignore_errors=True)  # finished: nothing left to resume
    if not gives_finite_outputs(done.model, split, device):
        # The method left NaN/inf weights or outputs that its own guard (if any) did not catch:
        # the last good weights are the original's.
        log.warning("%s left non-finite weights or outputs; keeping the original model's",
                    method.name)  # fmt: skip
        done.model = copy.deepcopy(original).to(device)
        ctx.metrics["diverged"] = True
    return done, ctx, opts


def write_plots(folder: Path, details: dict, confidences: dict, split: ForgetSplit,
                method: str) -> None:  # fmt: skip
    labels = role_labels(method)
    forgotten = [split.data.classes[c] for c in split.forget_classes]
    per_class_accuracy_plot(details["per_class_test_acc"], labels, forgotten,
                            folder / "per_class_accuracy.png")  # fmt: skip
    confidence_histograms(confidences, labels, folder / "mia_confidence.png")


def utility_warning(rows: dict) -> str:
    """A plain-words warning when the unlearned model lost more than UTILITY_POINTS of test or
    retain accuracy against the retrained model's; "" otherwise (or without a reference)."""
    if "retrain" not in rows:
        return ""
    after, ref = rows["unlearned"], rows["retrain"]
    worst = [
        f"{ref[key] - after[key]:.1f} points of {name} accuracy ({after[key]:.1f} vs retrain's "
        f"{ref[key]:.1f})"
        for name, key in (("test", "TA"), ("retain", "RA"))
        if ref[key] - after[key] > UTILITY_POINTS
    ]
    if not worst:
        return ""
    return (
        f"WARNING: the unlearned model lost {' and '.join(worst)}: it forgot by damaging "
        "the model, and its avg_gap hides that; do not use it as it is."
    )


def unsuited_warning(cfg: RunConfig, split: ForgetSplit) -> str:
    """The caption's echo of the log's warning (which gives the figures) for a method
    documented as unsuited to what this run forgets."""
    name = cfg.method.name
    if name not in METHODS or split.targets not in options_type(name).unsuited:
        return ""
    what = "a class" if split.targets == "class" else "samples"
    return (f"WARNING: {name} is documented as unsuited to forgetting {what}: on the tuning "
            "seeds none of its settings forgot on every seed, kept the model's accuracy and "
            "beat doing nothing at once (the log and README give the figures).")  # fmt: skip


def write_outputs(
    run_dir: Path, unlearned: nn.Module, rows: dict, cfg: RunConfig, split: ForgetSplit
) -> None:
    save_checkpoint(
        unlearned,
        run_dir / "checkpoints" / "unlearned.safetensors",
        what="the unlearned model's checkpoint",
        metadata={
            "model": cfg.model.plain(),
            "dataset": cfg.dataset.name,
            "classes": list(split.data.classes),
            "input_shape": list(split.data.input_shape),
            "method": cfg.method.name,
            "forget": split.tag,
            "normalisation": {
                "mean": list(split.data.mean),
                "std": list(split.data.std),
                "pixel_max": split.data.pixel_max,
            },
            # an ensemble checkpoint (sisa) holds this many members of the model above
            "ensemble_members": len(getattr(unlearned, "members", [])) or None,
        },
    )
    frame = models_frame(rows, role_labels(cfg.method.name))
    write_csv(frame, run_dir / "metrics.csv")
    title = f"{cfg.method.name} on {cfg.dataset.name}/{cfg.model.name}, forget {split.tag}"
    caption = f"validation split: {len(split.validation_idx)} training samples held out"
    if "retrain" not in rows:
        caption = evidence_verdict(rows, split) + " " + caption
    if "retrain_other_seed" in rows:
        floor = rows["retrain_other_seed"]["avg_gap"]
        verdict = "within" if rows["unlearned"]["avg_gap"] <= floor else "outside"
        caption = (f"noise floor (retrain, other seed): avg_gap {floor:.2f}; the unlearned model "
                   f"is {verdict} it. " + caption)  # fmt: skip
    damage = utility_warning(rows)
    if damage:
        log.warning("%s", damage)
    caption = "\n".join(w for w in (damage, unsuited_warning(cfg, split), caption) if w)
    out_console.print(metrics_by_model_table(frame, title, caption))
    log.info("results in %s", run_dir)
