"""A per-example likelihood-ratio membership attack with shadow models (LiRA, Carlini et al. 2022;
applied to unlearning as in U-LiRA, Hayes et al. 2024). Off by default: `evaluation=lira`.

K shadow models are trained, each on a random half of the training set. For every forget sample
the logit-scaled confidence phi = log p_y - log sum_{j != y} p_j under the shadows that trained
on it ("in") and those that did not ("out") gives two Gaussians (the per-example means with a
variance pooled over the forget set, the estimate that stays stable with few shadows). A model's
phi on the sample is then scored log N(phi; in) - log N(phi; out); above 0, it looks trained-on.
`lira_member` is the % of forget samples that look trained-on: an original model scores high, a
retrained one low, and a good unlearning method like the retrained one.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from unlearn_cli.cache import ModelCache
from unlearn_cli.data.builders import dataset_key
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.evaluation.competition import logit_scaled_confidence
from unlearn_cli.evaluation.metrics import predict_logits
from unlearn_cli.models import build_model
from unlearn_cli.training import train_classifier

log = logging.getLogger(__name__)


def shadow_membership(n_train: int, shadows: int, seed: int) -> np.ndarray:
    """(shadows, n_train) booleans: which training samples each shadow trains on (half each)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n_train) < n_train // 2 for _ in range(shadows)])


def shadow_phis(cfg: DictConfig, split: ForgetSplit, device: torch.device) -> tuple:
    """phi of every forget sample under every shadow model, and which shadows trained on it."""
    data, lira = split.data, cfg.evaluation.lira
    members = shadow_membership(data.num_train, lira.shadow_models, lira.seed)
    cache = ModelCache(cfg.cache_dir)
    fx, fy = split.forget
    phis = []
    for k, chosen in enumerate(members):
        idx = torch.as_tensor(np.flatnonzero(chosen))

        def fresh(k: int = k) -> nn.Module:
            return build_model(cfg.model, data.input_shape, data.num_classes, lira.seed + k)

        def train(k: int = k, idx: torch.Tensor = idx) -> nn.Module:
            model = fresh(k)
            train_classifier(model, data.x_train, data.y_train, cfg.model.train, device,
                             lira.seed + k, f"shadow {k + 1}/{len(members)}", rows=idx.numpy(),
                             feed=data.feed)  # fmt: skip
            return model

        key = {"dataset": dataset_key(cfg.dataset),
               "model": OmegaConf.to_container(cfg.model, resolve=True),
               "shadow": k, "shadows_seed": lira.seed, "device_type": device.type}  # fmt: skip
        shadow = cache.get_or_train("shadow", key, fresh, train).model.to(device)
        phis.append(logit_scaled_confidence(predict_logits(shadow, fx, device, 1024), fy))
    return np.stack(phis), members[:, split.forget_idx]


def lira_member_pct(phi: np.ndarray, shadow_phi: np.ndarray, trained_on: np.ndarray) -> float:
    """% of samples whose phi is likelier under the "in" Gaussian than the "out" one."""
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
    return 100.0 * float(np.mean((log_in > log_out)[usable])) if usable.any() else float("nan")


def add_lira(rows: dict, models: dict, split: ForgetSplit, cfg: DictConfig, device) -> None:
    """Add `lira_member` to every model's row."""
    shadow_phi, trained_on = shadow_phis(cfg, split, device)
    fx, fy = split.forget
    for role, model in models.items():
        phi = logit_scaled_confidence(predict_logits(model, fx, device, 1024), fy)
        rows[role]["lira_member"] = lira_member_pct(phi, shadow_phi, trained_on)
    log.info(
        "LiRA with %d shadow models: %s",
        len(shadow_phi),
        ", ".join(f"{r} {rows[r]['lira_member']:.1f}%" for r in models),
    )
