"""One experiment, top to bottom: seed -> data -> base model -> method -> evaluate -> write.

`run_experiment` is the story; the models it compares are built in named steps (run_models.py):
the original (trained, cached, or the user's own), the references (the retrained model and the
noise floor's second retraining) and the timed unlearning of the original (unlearning.py).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from unlearn_cli.console import out_console
from unlearn_cli.copies.plant import Planted, detection_figures, plant_copies
from unlearn_cli.copies.request import CopyCheck, planned_scans
from unlearn_cli.corruption.request import corrective_split
from unlearn_cli.curves import recording, write_curves
from unlearn_cli.data import ForgetSplit, ImageDataset, load_dataset
from unlearn_cli.data.spec import forget_tag_of, split_from_config
from unlearn_cli.device import resolve_device, resolve_threads
from unlearn_cli.errors import UserError, first_line
from unlearn_cli.evaluation.evaluate import evaluate_models, evidence_verdict
from unlearn_cli.evaluation.lira import add_lira, add_ulira
from unlearn_cli.evaluation.metrics import UTILITY_POINTS
from unlearn_cli.evaluation.plots import confidence_histograms, per_class_accuracy_plot
from unlearn_cli.evaluation.tables import metrics_by_model_table, models_frame, write_csv
from unlearn_cli.methods import METHODS, log_method_defaults, options_type
from unlearn_cli.models import build_model, save_checkpoint
from unlearn_cli.record import RunRecord
from unlearn_cli.run_models import GivenOriginal, build_models, given_original
from unlearn_cli.stream.history import KEY as HISTORY_KEY
from unlearn_cli.stream.history import forgotten_record, with_history
from unlearn_cli.unlearning import seed_everything
from unlearn_cli.validate import RunConfig

log = logging.getLogger(__name__)

__all__ = ["GivenOriginal", "build_models", "run_experiment", "seed_everything"]


def run_experiment(config: RunConfig, run_dir: Path | str) -> dict:
    """Run the experiment `config` and write its outputs into `run_dir`; return metrics.json's
    data."""
    started = time.perf_counter()
    run_dir, run = Path(run_dir), config.run
    device = resolve_device(run.device)
    torch.set_num_threads(resolve_threads(run.threads))
    seed_everything(run.seed)
    tag = forget_tag_of(config)
    data = load_dataset(config.dataset, run.cache_dir)
    given = check_before_training(config, data)
    # A checkpoint that already forgot earlier requests carries them: they stay forgotten.
    if run.corruption.active:  # corrective unlearning: manipulated data, a partial request
        split = corrective_split(config, data, device)
    else:
        split = with_history(split_from_config(data, config), given and given.history)
    planted = None
    if run.request.plant.share is not None:  # the copies benchmark's planted ground truth
        split, planted = plant_copies(split, run.request.plant, run.seed)
        log.info("planted %d copies of %d request samples in the retain set",
                 len(planted.rows), len(np.unique(planted.source)))  # fmt: skip
    copies = copy_check(config, split, run_dir)
    if copies is not None:
        copies.before_model()  # request.copies=refuse stops here when a hash finds copies
    record = RunRecord(run_dir, config, tag)
    record.update(split=split.describe(), device=str(device))
    if split.corruption is not None:  # the ground truth of a corrective request
        record.update(corruption=split.corruption.describe(split.data.classes))
    if given is not None:
        record.update(original_checkpoint={"path": run.original.checkpoint,
                                           "sha256": given.sha256})  # fmt: skip
    log_run(config, split, device)
    log_method_defaults(config.method, split.targets)
    with record.failures_recorded():
        after_original = None
        if copies is not None:
            after_original = lambda original: copies.with_original(original, device)  # noqa: E731
        with recording("run") as curves:  # every training loop's curve (curves.csv)
            built = build_models(config, split, device, given, after_original)
        write_curves(run_dir, curves)
        if built.split is not split:  # request.copies=extend
            split = built.split
            record.update(split=split.describe())
        if copies is not None:
            record.update(copies=copies_record(copies, planted))
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
            if copies is not None:
                copies.write_plot(run_dir / "plots")
        write_outputs(run_dir, models["unlearned"], rows, config, split,
                      copies.caption() if copies is not None else "")  # fmt: skip
        status = "diverged" if method_metrics.get("diverged") else "completed"
        if status == "diverged":
            log.warning("%s diverged: the unlearned model is its last good weights; the result "
                        "is not trustworthy", config.method.name)  # fmt: skip
        if copies is not None:  # the scan's share of the run's wall time
            share = copies.seconds / (time.perf_counter() - started)
            record.update(copies={**copies_record(copies, planted), "share_of_run": share})
        record.finish(status, models=rows, method_metrics=method_metrics, **details)
    return record.data


def copy_check(config: RunConfig, split: ForgetSplit, run_dir: Path) -> CopyCheck | None:
    """The request's copy scan (request.copies), its scans checked against the data and the
    model; None when it is off."""
    opts = config.run.request
    if not opts.active:
        return None
    probe = build_model(config.model, split.data.input_shape, split.data.num_classes, 0)
    scans = planned_scans(opts, split, probe)
    return CopyCheck(opts, split, scans, run_dir, config.evaluation.options.batch_size)


def copies_record(copies: CopyCheck, planted: Planted | None) -> dict:
    """metrics.json's `copies`: the scan's summary, and with planted copies the detectors'
    recall per augmentation and precision against that ground truth."""
    summary = copies.summary()
    if planted is not None:
        summary["planted"] = {**planted.describe(),
                              **detection_figures(planted, copies.pairs, copies.scans)}  # fmt: skip
    return summary


def check_before_training(config: RunConfig, data: ImageDataset) -> GivenOriginal | None:
    """Options that depend on the architecture (e.g. influence's dense Hessian size), and a
    user's checkpoint, are checked before anything is trained; the user's original, if any."""
    probe = build_model(config.model, data.input_shape, data.num_classes, 0)
    check_input_shape(probe, data.input_shape, config.model.name)
    config.method.options.check_model(probe)
    return given_original(config, data)


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
        "retrain_clean": "retrain without every manipulated sample",
        "unlearned": f"unlearned ({method})",
    }


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
    run_dir: Path,
    unlearned: nn.Module,
    rows: dict,
    cfg: RunConfig,
    split: ForgetSplit,
    note: str = "",
) -> None:
    """The unlearned checkpoint, metrics.csv and the run's table (`note`: a line for its
    caption)."""
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
            HISTORY_KEY: forgotten_record(split),  # what a next run on it must keep forgotten
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
    caption = "\n".join(w for w in (damage, unsuited_warning(cfg, split), note, caption) if w)
    out_console.print(metrics_by_model_table(frame, title, caption))
    log.info("results in %s", run_dir)
