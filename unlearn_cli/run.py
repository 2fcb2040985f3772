"""One experiment, top to bottom: seed -> data -> base model -> method -> evaluate -> write."""

from __future__ import annotations

import copy
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from unlearn_cli.cache import ModelCache
from unlearn_cli.console import out_console
from unlearn_cli.data import ForgetSplit, load_dataset
from unlearn_cli.data.builders import dataset_key
from unlearn_cli.data.spec import forget_tag_of, split_from_config
from unlearn_cli.device import resolve_device, resolve_threads
from unlearn_cli.errors import TrainingDiverged
from unlearn_cli.evaluation.evaluate import evaluate_models
from unlearn_cli.evaluation.lira import add_lira
from unlearn_cli.evaluation.metrics import predict_logits
from unlearn_cli.evaluation.plots import confidence_histograms, per_class_accuracy_plot
from unlearn_cli.evaluation.tables import metrics_by_model_table, models_frame, write_csv
from unlearn_cli.methods import METHODS, UnlearnContext
from unlearn_cli.methods.common import is_finite_model
from unlearn_cli.models import build_model, save_checkpoint
from unlearn_cli.record import RunRecord
from unlearn_cli.training import train_classifier
from unlearn_cli.validate import validate_config

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_experiment(cfg: DictConfig, run_dir: Path | str) -> dict:
    """Run the experiment `cfg` and write its outputs into `run_dir`; return metrics.json's data."""
    run_dir = Path(run_dir)
    validate_config(cfg)
    device = resolve_device(cfg.device)
    torch.set_num_threads(resolve_threads(cfg.threads))
    seed_everything(cfg.seed)
    tag = forget_tag_of(cfg)
    data = load_dataset(cfg.dataset, cfg.cache_dir)
    split = split_from_config(data, cfg)
    record = RunRecord(run_dir, cfg, tag)
    record.update(split=split.describe(), device=str(device))
    log.info(
        "%s on %s/%s: forget %s (%d samples), retain %d, device %s",
        cfg.method.name,
        cfg.dataset.name,
        cfg.model.name,
        split.tag,
        len(split.forget_idx),
        len(split.retain_idx),
        device,
    )
    try:
        models, seconds, method_metrics = build_models(cfg, split, device)
        rows, details, confidences = evaluate_models(
            models, seconds, split, device, cfg.evaluation, cfg.seed
        )
        if "lira" in cfg.evaluation:
            add_lira(rows, models, split, cfg, device)
        if cfg.evaluation.plots:
            write_plots(run_dir / "plots", details, confidences, split, cfg.method.name)
        write_outputs(run_dir, models["unlearned"], rows, cfg, split)
        status = "diverged" if method_metrics.get("diverged") else "completed"
        if status == "diverged":
            log.warning("%s diverged: the unlearned model is its last good weights; the result "
                        "is not trustworthy", cfg.method.name)  # fmt: skip
        record.finish(status, models=rows, method_metrics=method_metrics, **details)
    except KeyboardInterrupt:
        record.finish("interrupted")
        raise
    except TrainingDiverged as exc:
        record.finish("diverged", error=str(exc))
        raise
    except Exception as exc:
        record.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return record.data


def build_models(
    cfg: DictConfig, split: ForgetSplit, device: torch.device
) -> tuple[dict[str, nn.Module], dict[str, float | None], dict]:
    """The original and retrained models (cached) and the unlearned one, with their costs."""
    data = split.data
    cache = ModelCache(cfg.cache_dir)
    train_cfg = cfg.model.train

    def fresh() -> nn.Module:
        return build_model(cfg.model, data.input_shape, data.num_classes, cfg.seed)

    def train_original() -> nn.Module:
        model = fresh()
        train_classifier(model, data.x_train, data.y_train, train_cfg, device, cfg.seed,
                         "original", feed=data.feed)  # fmt: skip
        return model

    def context() -> UnlearnContext:
        return UnlearnContext(cfg.method, train_cfg, device, cfg.seed, fresh)

    base_key = {
        "dataset": dataset_key(cfg.dataset),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "seed": cfg.seed,
        "device_type": device.type,
    }
    original = cache.get_or_train("original", base_key, fresh, train_original)
    retrain = METHODS.get("retrain")
    reference = cache.get_or_train(
        "retrain",
        {**base_key, "forget": split.fingerprint()},
        fresh,
        lambda: retrain(original.model, split, context()),
    )
    if cfg.method.name == "retrain":
        # The reference *is* this method's result; its time is the measured retraining time.
        unlearned, seconds, ctx = reference.model, reference.train_seconds, context()
    else:
        method, ctx = METHODS.get(cfg.method.name), context()
        model = copy.deepcopy(original.model).to(device)
        seed_everything(cfg.seed)
        start = time.perf_counter()
        unlearned = method(model, split, ctx)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start - ctx.untimed_seconds
        if not gives_finite_outputs(unlearned, split, device):
            # The method left NaN/inf weights or outputs that its own guard (if any) did not
            # catch: the last good weights are the original's.
            log.warning("%s left non-finite weights or outputs; keeping the original model's",
                        cfg.method.name)  # fmt: skip
            unlearned = copy.deepcopy(original.model).to(device)
            ctx.metrics["diverged"] = True
    log.info("%s took %.2fs (retrain: %.2fs)", cfg.method.name, seconds, reference.train_seconds)
    models = {"original": original.model, "retrain": reference.model, "unlearned": unlearned}
    costs = {"original": None, "retrain": reference.train_seconds, "unlearned": seconds}
    cache_info = {"original_hit": original.hit, "retrain_hit": reference.hit}
    return {k: m.to(device) for k, m in models.items()}, costs, {**ctx.metrics, **cache_info}


def gives_finite_outputs(model: nn.Module, split: ForgetSplit, device: torch.device) -> bool:
    """Finite weights, and finite logits on a probe of forget and retain samples."""
    if not is_finite_model(model):
        return False
    probe = np.concatenate([split.forget_idx[:256], split.retain_idx[:256]])
    x = split.data.x_train[torch.as_tensor(probe)]
    return bool(torch.isfinite(predict_logits(model, x, device, 512)).all())


def write_plots(folder: Path, details: dict, confidences: dict, split: ForgetSplit,
                method: str) -> None:  # fmt: skip
    labels = {"original": "original", "retrain": "retrain", "unlearned": f"unlearned ({method})"}
    forgotten = [split.data.classes[c] for c in split.forget_classes]
    per_class_accuracy_plot(details["per_class_test_acc"], labels, forgotten,
                            folder / "per_class_accuracy.png")  # fmt: skip
    confidence_histograms(confidences, labels, folder / "mia_confidence.png")


def write_outputs(
    run_dir: Path, unlearned: nn.Module, rows: dict, cfg: DictConfig, split: ForgetSplit
) -> None:
    save_checkpoint(
        unlearned,
        run_dir / "checkpoints" / "unlearned.safetensors",
        {
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
    labels = {
        "original": "original",
        "retrain": "retrain",
        "unlearned": f"unlearned ({cfg.method.name})",
    }
    frame = models_frame(rows, labels)
    write_csv(frame, run_dir / "metrics.csv")
    title = f"{cfg.method.name} on {cfg.dataset.name}/{cfg.model.name}, forget {split.tag}"
    out_console.print(metrics_by_model_table(frame, title))
    log.info("results in %s", run_dir)
