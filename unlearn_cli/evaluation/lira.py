"""Per-example likelihood-ratio membership attacks with shadow models. Off by default.

`evaluation=lira`: LiRA (Carlini et al. 2022). K shadow models are trained, each on a random
half of the training set (the validation split is never in it). For every forget sample the
logit-scaled confidence phi = log p_y - log sum_{j != y} p_j under the shadows that trained on it
("in") and those that did not ("out") gives two Gaussians (per-example means, a variance pooled
over the forget set, stable with few shadows). A model's phi on the sample is scored
log N(phi; in) - log N(phi; out); above 0 it looks trained-on. `lira_member` is the % of forget
samples that look trained-on: high for the original, low for a retrained model.

`evaluation=ulira`: U-LiRA (Hayes et al. 2024, "Inexact unlearning needs more careful
evaluations"). The question is not "was x trained on" but "is this an *unlearned* model or a
*retrained* one". So the "in" Gaussian comes from shadows that trained on x **and then ran the
run's unlearning method** (with its options) to remove the forget samples they held; "out" from
shadows that never saw x (a retrained model's view). The attack is then applied to the run's
unlearned model (positive) and its retrained model (negative); `ulira_acc` is the balanced
accuracy over forget samples: 50% means the method's output cannot be told from retraining,
100% that it always can. `ulira_member` per model is the % of forget samples that look
unlearned-after-training. LiRA's numbers are reported beside it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from unlearn_cli.cache import ModelCache, model_key
from unlearn_cli.data.builders import dataset_key
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.evaluation.competition import logit_scaled_confidence
from unlearn_cli.inference import predict_logits
from unlearn_cli.models import build_model
from unlearn_cli.training import train_classifier

log = logging.getLogger(__name__)


def shadow_membership(n_train: int, shadows: int, seed: int) -> np.ndarray:
    """(shadows, n_train) booleans: which training samples each shadow trains on (half each)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n_train) < n_train // 2 for _ in range(shadows)])


def shadow_models(cfg: DictConfig, split: ForgetSplit, device: torch.device):
    """The K shadow models (cached) and which training rows each trained on."""
    data, lira = split.data, cfg.evaluation.lira
    members = shadow_membership(data.num_train, lira.shadow_models, lira.seed)
    members[:, split.validation_idx] = False  # held out from every model, shadows included
    cache = ModelCache(cfg.cache_dir)
    shadows = []
    for k, chosen in enumerate(members):
        idx = torch.as_tensor(np.flatnonzero(chosen))

        def fresh(k: int = k) -> nn.Module:
            return build_model(cfg.model, data.input_shape, data.num_classes, lira.seed + k)

        def train(staging: Path, k: int = k, idx: torch.Tensor = idx) -> nn.Module:
            model = fresh(k)
            train_classifier(model, data.x_train, data.y_train, cfg.model.train, device,
                             lira.seed + k, f"shadow {k + 1}/{len(members)}", rows=idx.numpy(),
                             feed=data.feed, checkpoint=staging / "shadow.ckpt")  # fmt: skip
            return model

        key = {"dataset": dataset_key(cfg.dataset, split.data),
               "model": model_key(cfg.model),
               "validation": split.validation_fingerprint(),
               "shadow": k, "shadows_seed": lira.seed, "device_type": device.type}  # fmt: skip
        shadows.append(cache.get_or_train("shadow", key, fresh, train).model.to(device))
    return shadows, members


def phi_of(model: nn.Module, split: ForgetSplit, device, batch_size: int) -> np.ndarray:
    fx, fy = split.forget
    return logit_scaled_confidence(predict_logits(model, fx, device, batch_size), fy)


def shadow_phis(cfg: DictConfig, split: ForgetSplit, device: torch.device) -> tuple:
    """phi of every forget sample under every shadow model, and which shadows trained on it."""
    shadows, members = shadow_models(cfg, split, device)
    size = cfg.evaluation.batch_size
    phis = np.stack([phi_of(s, split, device, size) for s in shadows])
    return phis, members[:, split.forget_idx]


def lira_member_pct(phi: np.ndarray, shadow_phi: np.ndarray, trained_on: np.ndarray) -> float:
    """% of samples whose phi is likelier under the "in" Gaussian than the "out" one."""
    looks_in, usable = looks_in_mask(phi, shadow_phi, trained_on)
    return 100.0 * float(np.mean(looks_in[usable])) if usable.any() else float("nan")


def looks_in_mask(phi: np.ndarray, shadow_phi: np.ndarray, trained_on: np.ndarray):
    """Per sample: likelier under "in" than "out", and whether both sides have shadows."""
    phi_in = np.where(trained_on, shadow_phi, np.nan)
    phi_out = np.where(~trained_on, shadow_phi, np.nan)
    n_in, n_out = trained_on.sum(axis=0), (~trained_on).sum(axis=0)
    usable = (n_in > 0) & (n_out > 0)  # samples with shadows on both sides
    with np.errstate(invalid="ignore", divide="ignore"):
        mu_in = np.where(trained_on, shadow_phi, 0.0).sum(axis=0) / n_in
        mu_out = np.where(~trained_on, shadow_phi, 0.0).sum(axis=0) / n_out
    var_in = np.nanmean((phi_in - mu_in) ** 2) + 1e-6
    var_out = np.nanmean((phi_out - mu_out) ** 2) + 1e-6
    log_in = -0.5 * ((phi - mu_in) ** 2 / var_in + np.log(var_in))
    log_out = -0.5 * ((phi - mu_out) ** 2 / var_out + np.log(var_out))
    return log_in > log_out, usable


def add_lira(rows: dict, models: dict, split: ForgetSplit, cfg: DictConfig, device) -> None:
    """Add `lira_member` to every model's row."""
    shadow_phi, trained_on = shadow_phis(cfg, split, device)
    for role, model in models.items():
        phi = phi_of(model, split, device, cfg.evaluation.batch_size)
        rows[role]["lira_member"] = lira_member_pct(phi, shadow_phi, trained_on)
    log.info(
        "LiRA with %d shadow models: %s",
        len(shadow_phi),
        ", ".join(f"{r} {rows[r]['lira_member']:.1f}%" for r in models),
    )


def shadow_split(split: ForgetSplit, chosen: np.ndarray) -> ForgetSplit:
    """The run's deletion request as a shadow trained on rows `chosen` receives it: forget the
    forget samples it holds, keep the rest of its half."""
    held = chosen[split.forget_idx]
    forget = split.forget_idx[held]
    retain = np.setdiff1d(np.flatnonzero(chosen), forget)
    return dataclasses.replace(split, forget_idx=forget, retain_idx=retain)


def add_ulira(rows: dict, models: dict, split: ForgetSplit, cfg: DictConfig, device,
              method_name: str, method_opts, train_cfg) -> dict:  # fmt: skip
    """U-LiRA: "in" = shadows that trained on x and then ran the method; "out" = shadows that
    never saw x. Adds `ulira_member` to every row; returns {"ulira_acc": ...} for metrics.json."""
    from unlearn_cli.methods import UnlearnContext, run_method

    shadows, members = shadow_models(cfg, split, device)
    lira, size = cfg.evaluation.lira, cfg.evaluation.batch_size
    phis = []
    for k, (shadow, chosen) in enumerate(zip(shadows, members, strict=True)):
        sub = shadow_split(split, chosen)
        if len(sub.forget_idx):  # remove what this shadow held of the forget set

            def fresh(k: int = k) -> nn.Module:
                return build_model(cfg.model, split.data.input_shape, split.data.num_classes,
                                   lira.seed + k)  # fmt: skip

            ctx = UnlearnContext(train_cfg, device, lira.seed + k, fresh, size)
            shadow = run_method(method_name, copy.deepcopy(shadow), sub, ctx, method_opts)
        phis.append(phi_of(shadow, split, device, size))
        log.info("U-LiRA: shadow %d/%d unlearned with %s", k + 1, len(shadows), method_name)
    shadow_phi, trained_on = np.stack(phis), members[:, split.forget_idx]
    looks = {}
    for role, model in models.items():
        phi = phi_of(model, split, device, size)
        looks[role], usable = looks_in_mask(phi, shadow_phi, trained_on)
        rows[role]["ulira_member"] = (100.0 * float(np.mean(looks[role][usable]))
                                      if usable.any() else float("nan"))  # fmt: skip
    # balanced accuracy of telling the unlearned model (in) from the retrained one (out)
    acc = 50.0 * (np.mean(looks["unlearned"][usable]) + np.mean(~looks["retrain"][usable]))
    log.info("U-LiRA with %d shadows: attack accuracy %.1f%% (50%% = like retraining)",
             len(shadows), acc)  # fmt: skip
    return {"ulira_acc": float(acc), "ulira_shadows": len(shadows)}
