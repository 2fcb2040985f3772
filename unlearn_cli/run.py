"""One experiment, top to bottom: seed -> data -> base model -> method -> evaluate -> write."""

from __future__ import annotations

import copy
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from unlearn_cli.cache import ModelCache, cache_key, model_key
from unlearn_cli.console import out_console
from unlearn_cli.cost import Cost, attach_counter, counting, warm_up
from unlearn_cli.data import ForgetSplit, load_dataset
from unlearn_cli.data.builders import dataset_key
from unlearn_cli.data.spec import forget_tag_of, split_from_config
from unlearn_cli.device import resolve_device, resolve_threads
from unlearn_cli.errors import TrainingDiverged, UserError, first_line
from unlearn_cli.evaluation.evaluate import evaluate_models, evidence_verdict
from unlearn_cli.evaluation.lira import add_lira, add_ulira
from unlearn_cli.evaluation.metrics import UTILITY_POINTS
from unlearn_cli.evaluation.plots import confidence_histograms, per_class_accuracy_plot
from unlearn_cli.evaluation.tables import metrics_by_model_table, models_frame, write_csv
from unlearn_cli.inference import predict_logits
from unlearn_cli.methods import (
    METHODS,
    UnlearnContext,
    log_method_defaults,
    memorised_options,
    note_memorised_original,
    options_type,
    run_method,
)
from unlearn_cli.methods.common import is_finite_model
from unlearn_cli.models import build_model, save_checkpoint
from unlearn_cli.models.state_files import load_original
from unlearn_cli.options import Options
from unlearn_cli.record import RunRecord, method_options
from unlearn_cli.training import train_classifier
from unlearn_cli.validate import RunConfig, validate_config

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_experiment(cfg: DictConfig, run_dir: Path | str) -> dict:
    """Run the experiment `cfg` and write its outputs into `run_dir`; return metrics.json's data."""
    run_dir = Path(run_dir)
    typed = validate_config(cfg)
    device = resolve_device(cfg.device)
    torch.set_num_threads(resolve_threads(cfg.threads))
    seed_everything(cfg.seed)
    tag = forget_tag_of(cfg)
    data = load_dataset(cfg.dataset, cfg.cache_dir)
    split = split_from_config(data, cfg)
    # Options that depend on the architecture (e.g. influence's dense Hessian size), and a
    # user's checkpoint, are checked before anything is trained.
    probe = build_model(typed.model, data.input_shape, data.num_classes, 0)
    check_input_shape(probe, data.input_shape, cfg.model.name)
    typed.method.check_model(probe)
    given = given_original(typed, data, cfg.seed)
    record = RunRecord(run_dir, cfg, tag, typed.method)
    record.update(split=split.describe(), device=str(device))
    if given is not None:
        record.update(original_checkpoint={"path": typed.run.original.checkpoint,
                                           "sha256": given.sha256})  # fmt: skip
    judged = "; a forget list, judged like random samples" if split.scenario == "list" else ""
    log.info(
        "%s on %s/%s: forget %s (%d samples%s), retain %d, validation %d, device %s",
        cfg.method.name,
        cfg.dataset.name,
        cfg.model.name,
        split.tag,
        len(split.forget_idx),
        judged,
        len(split.retain_idx),
        len(split.validation_idx),
        device,
    )
    log_method_defaults(cfg.method, typed.method, split.targets)
    try:
        built = build_models(cfg, split, device, typed, given)
        models, method_metrics, ran_with = built.models, built.method_metrics, built.ran_with
        if ran_with is not typed.method:  # memorising-original defaults replaced the samples ones
            record.set_method(cfg, ran_with)
        rows, details, confidences = evaluate_models(
            models, built.seconds, split, device, typed.evaluation, cfg.seed, built.counts
        )
        if "setup_seconds" in method_metrics:  # SISA: set-up before any deletion request
            rows["unlearned"]["setup_s"] = method_metrics["setup_seconds"]
        if typed.evaluation.lira is not None:
            add_lira(rows, models, split, cfg, device)
        if cfg.evaluation.name == "ulira":
            method_metrics.update(add_ulira(rows, models, split, cfg, device, cfg.method.name,
                                            ran_with, typed.model.train))  # fmt: skip
        if cfg.evaluation.plots:
            write_plots(run_dir / "plots", details, confidences, split, cfg.method.name)
        write_outputs(run_dir, models["unlearned"], rows, cfg, split)
        status = "diverged" if method_metrics.get("diverged") else "completed"
        if status == "diverged":
            log.warning("%s diverged: the unlearned model is its last good weights; the result "
                        "is not trustworthy", cfg.method.name)  # fmt: skip
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


def given_original(typed: RunConfig, data, seed: int) -> GivenOriginal | None:
    path = typed.run.original.checkpoint
    if path is None:
        return None
    model = build_model(typed.model, data.input_shape, data.num_classes, seed, pretrained=False)
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
    cfg: DictConfig,
    split: ForgetSplit,
    device: torch.device,
    typed: RunConfig | None = None,
    given: GivenOriginal | None = None,
) -> BuiltModels:
    """The original (cached, or the user's `given` one) and retrained (cached) models and the
    unlearned one, with their wall seconds, the method's own figures, the counted sample
    passes of each and the options the method ran with.

    With `evaluation.noise_floor` a model retrained with the next seed joins them: how far two
    exact retrainings lie apart, the level below which no method can be told from retraining.
    With `evaluation.reference=none` nothing is retrained: there is no "retrain" model.
    """
    typed = typed or validate_config(cfg)
    data = split.data
    cache = ModelCache(cfg.cache_dir)
    train_cfg = typed.model.train

    def fresh(seed: int = cfg.seed) -> nn.Module:
        return attach_counter(build_model(typed.model, data.input_shape, data.num_classes, seed))

    def train_original(staging: Path) -> nn.Module:
        model = fresh()
        train_classifier(model, data.x_train, data.y_train, train_cfg, device, cfg.seed,
                         "original", rows=split.trainable_idx, feed=data.feed,
                         checkpoint=staging / "original.ckpt")  # fmt: skip
        return model

    def context(seed: int = cfg.seed, staging: Path | None = None) -> UnlearnContext:
        return UnlearnContext(train_cfg, device, seed, lambda: fresh(seed),
                              typed.evaluation.batch_size, checkpoint_dir=staging)  # fmt: skip

    base_key = {
        "dataset": dataset_key(cfg.dataset, split.data),
        "model": model_key(cfg.model),
        "seed": cfg.seed,
        "device_type": device.type,
        "validation": split.validation_fingerprint(),
    }
    if given is None:
        original = cache.get_or_train("original", base_key, fresh, train_original)
        original_model, cache_info = original.model, {"original_hit": original.hit}
    else:
        original_model, cache_info = given.model, {"original_checkpoint_sha256": given.sha256}

    def retrained(seed: int):
        key = {**base_key, "seed": seed, "forget": split.fingerprint()}
        return cache.get_or_train("retrain", key, lambda: fresh(seed),
                                  lambda staging: run_method("retrain", original_model, split,
                                                             context(seed, staging)))  # fmt: skip

    reference = retrained(cfg.seed) if typed.evaluation.reference == "retrain" else None
    if cfg.method.name == "retrain" and reference is not None:
        # The reference *is* this method's result; its cost is the measured retraining cost.
        unlearned, seconds, cost, ctx = (reference.model, reference.train_seconds,
                                         reference.cost, context())  # fmt: skip
        opts = typed.method
    else:
        model = copy.deepcopy(original_model).to(device)
        memorising = note_memorised_original(cfg.method.name, typed.method, model, split, device,
                                             typed.evaluation.batch_size)  # fmt: skip
        opts = typed.method
        if memorising.get("original_memorises"):
            opts = memorised_options(cfg.method, opts)
        # The method's own training loops (SISA's shards) resume from here after a kill.
        method_key = {**base_key, "forget": split.fingerprint(), "original": given and given.sha256,
                      "method": method_options(cfg, opts)}  # fmt: skip
        staging = cache.staging_dir(f"method-{cfg.method.name}-{cache_key(method_key)}")
        ctx = context(staging=staging)
        ctx.metrics.update(memorising)
        # One-time library and device set-up is not unlearning work: pay it before the timer.
        warm_up(model, data.x_train[torch.as_tensor(split.forget_idx[:2])], device,
                opts.uses_torch_func(), typed.evaluation.batch_size)  # fmt: skip
        seed_everything(cfg.seed)
        with counting() as counted:
            start = time.perf_counter()
            unlearned = run_method(cfg.method.name, model, split, ctx, opts)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            # counted.resumed_seconds: what resumed training loops did before a kill
            seconds = time.perf_counter() - start + counted.resumed_seconds - ctx.untimed_seconds
        cost = counted.minus(ctx.untimed_cost)
        shutil.rmtree(staging, ignore_errors=True)  # finished: nothing left to resume
        if not gives_finite_outputs(unlearned, split, device):
            # The method left NaN/inf weights or outputs that its own guard (if any) did not
            # catch: the last good weights are the original's.
            log.warning("%s left non-finite weights or outputs; keeping the original model's",
                        cfg.method.name)  # fmt: skip
            unlearned = copy.deepcopy(original_model).to(device)
            ctx.metrics["diverged"] = True
    models = {"original": original_model, "unlearned": unlearned}
    costs: dict[str, float | None] = {"original": None, "unlearned": seconds}
    counts: dict[str, Cost | None] = {"original": None, "unlearned": cost}
    if reference is None:
        log.info("%s took %.2fs, %d sample passes (no retrained reference: "
                 "evaluation.reference=none)", cfg.method.name, seconds, cost.units)  # fmt: skip
    else:
        log.info("%s took %.2fs, %d sample passes (retrain: %.2fs, %d)", cfg.method.name,
                 seconds, cost.units, reference.train_seconds, reference.cost.units)  # fmt: skip
        models["retrain"], costs["retrain"] = reference.model, reference.train_seconds
        counts["retrain"] = reference.cost
        if typed.evaluation.noise_floor:
            models["retrain_other_seed"] = retrained(cfg.seed + 1).model
            costs["retrain_other_seed"], counts["retrain_other_seed"] = None, None
        cache_info.update(retrain_hit=reference.hit,
                          retrain_time_measured="this run" if not reference.hit
                          else "when its cache entry was made")  # fmt: skip
    if ctx.untimed_seconds:
        ctx.metrics.update(setup_seconds=ctx.untimed_seconds, setup_cost=ctx.untimed_cost.as_dict())
    order = ("original", "retrain", "unlearned", "retrain_other_seed")
    models = {k: models[k].to(device) for k in order if k in models}
    return BuiltModels(models, costs, {**ctx.metrics, **cache_info}, counts, opts)


def gives_finite_outputs(model: nn.Module, split: ForgetSplit, device: torch.device) -> bool:
    """Finite weights, and finite logits on a probe of forget and retain samples."""
    if not is_finite_model(model):
        return False
    probe = np.concatenate([split.forget_idx[:256], split.retain_idx[:256]])
    x = split.data.x_train[torch.as_tensor(probe)]
    return bool(torch.isfinite(predict_logits(model, x, device, max(1, len(x)))).all())


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


def unsuited_warning(cfg: DictConfig, split: ForgetSplit) -> str:
    """The caption's echo of the log's warning (which gives the figures) for a method
    documented as unsuited to what this run forgets."""
    name = cfg.method.name
    if name not in METHODS or split.targets not in options_type(name).unsuited:
        return ""
    what = "a class" if split.targets == "class" else "samples"
    return (f"WARNING: {name} is documented as unsuited to forgetting {what}: on the tuning "
            "seeds none of its settings forgot on every seed, kept the model's accuracy and "
            "beat doing nothing at once (figures: the log, docs/methods.md).")  # fmt: skip


def cost_words(ratio: float | None) -> str:
    """The caption's cost clause: retrain's counted sample passes over the method's (cost.py)."""
    if ratio is None or not math.isfinite(ratio) or ratio <= 0:
        return ""
    if abs(ratio - 1) < 0.05:
        return f", at retraining's own cost (cost_ratio {ratio:.2f})"
    if ratio > 1:
        share = f"{ratio:.0f}" if ratio >= 10 else f"{ratio:.2g}"
        return f", at 1/{share} of retraining's cost (cost_ratio {ratio:.2f})"
    return f", at {1 / ratio:.1f} times retraining's cost (cost_ratio {ratio:.2f})"


def write_outputs(
    run_dir: Path, unlearned: nn.Module, rows: dict, cfg: DictConfig, split: ForgetSplit
) -> None:
    save_checkpoint(
        unlearned,
        run_dir / "checkpoints" / "unlearned.safetensors",
        what="the unlearned model's checkpoint",
        metadata={
            "model": OmegaConf.to_container(cfg.model, resolve=True),
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
                   f"is {verdict} it{cost_words(rows['unlearned'].get('cost_ratio'))}. "
                   + caption)  # fmt: skip
    damage = utility_warning(rows)
    if damage:
        log.warning("%s", damage)
    caption = "\n".join(w for w in (damage, unsuited_warning(cfg, split), caption) if w)
    out_console.print(metrics_by_model_table(frame, title, caption))
    log.info("results in %s", run_dir)
