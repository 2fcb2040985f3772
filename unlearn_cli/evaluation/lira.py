"""Per-example likelihood-ratio membership attacks with shadow models. Off by default.

`evaluation=lira`: LiRA (Carlini et al. 2022). K shadow models are trained, each on a random
half of the training set (the validation split is never in it). For every forget sample the
logit-scaled confidence phi = log p_y - log sum_{j != y} p_j under the shadows that trained on it
("in") and those that did not ("out") gives two Gaussians (per-example means, a variance pooled
over the forget set, stable with few shadows). A model's phi on the sample is scored
log N(phi; in) - log N(phi; out); above 0 it looks trained-on. `lira_member` is the % of forget
samples that look trained-on: high for the original, low for a retrained model.

`evaluation=ulira`: U-LiRA (Hayes et al. 2024, "Inexact unlearning needs more careful
evaluations to avoid a false sense of privacy"). The question is not "was x trained on" but "was
x trained on and then unlearned by the method, or was the model retrained without x". The two
populations come from shadow *pairs* built the same way up to the unlearning: one model trains
with x and the method unlearns a forget set holding x, the other trains from scratch on the same
data minus that forget set. Here the deletion request is the run's own
forget set F and the data are the run's own, so the populations are the distributions the run's
two scored models are drawn from, with only the seed (initialisation and batch order) varying.
Pair k (k = 0..K-1) has seed s_k, the K integers from `lira.seed` up that are neither the run's
seed nor the noise floor's (a shadow must not *be* a scored model):

- "unlearned" side A: a model trained like the run's original (forget + retain set, seed s_k),
  then the run's method with the run's options removes F: trained on x, then unlearned;
- "retrained" side B: a model trained from scratch on the run's retain set (seed s_k), like the
  run's retrained model: retrained without x.

Every pair holds every forget sample, so each x has K values of phi per side. Per x, a Gaussian
per side (per-example mean, the side's variance pooled over the forget set); a model looks
"unlearned" on x when log N(phi; A) > log N(phi; B). `ulira_member` per model is the % of forget
samples that look unlearned; `ulira_acc` is the balanced accuracy of calling the run's unlearned
model "unlearned" and its retrained model "retrained" over the forget samples,
50 * (P[unlearned looks A] + P[retrained looks B]): 50 means the method's output cannot be told
from retraining, 100 that it always can. For `method=retrain`, side A *is* side B (as in the
run, where the retrain method's result is the retrained reference): 50 by construction.

Why not shadows on random halves, as LiRA's: that variation stands for an attacker's ignorance
of the rest of the training set, which an evaluator does not have, and half-data shadows read
the full-data scored models off-centre (a no-op method is told from retraining less often:
docs/metrics.md). Every pair removes exactly F, so what the method does (it depends on the
request: its size, a class removed whole) is what it did in the run.

Class forgetting: F is every training image of the forgotten classes (outside the validation
split); side A trained on the classes, then the method removed them; side B never saw them.
Under B a forgotten class's images read very low; a method that leaves them likelier shows.

Cost: 2K trainings of the run's size, cached (entries `ulira_original` and `ulira_retrain`,
keyed by the dataset, the model and its training, the exact rows and the seed: the originals are
shared by every forget set and method, the retrains by every method with the same forget set),
and K method runs, recomputed each time like the run's own unlearned model. A method that leaves
a shadow non-finite gets its last good weights, the shadow's original, as the run does. LiRA's
numbers (its own K shadows) are reported beside it.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from unlearn_cli.cache import ModelCache, model_key
from unlearn_cli.data.builders import dataset_key
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.evaluation.competition import logit_scaled_confidence
from unlearn_cli.inference import predict_logits
from unlearn_cli.models import build_model
from unlearn_cli.training import train_classifier

if TYPE_CHECKING:  # the typed config: read here, never built
    from unlearn_cli.validate import RunConfig

log = logging.getLogger(__name__)


def shadow_membership(n_train: int, shadows: int, seed: int) -> np.ndarray:
    """(shadows, n_train) booleans: which training samples each shadow trains on (half each)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n_train) < n_train // 2 for _ in range(shadows)])


def shadow_models(config: RunConfig, split: ForgetSplit, device: torch.device):
    """The K shadow models (cached) and which training rows each trained on."""
    data, lira = split.data, config.evaluation.options.lira
    members = shadow_membership(data.num_train, lira.shadow_models, lira.seed)
    members[:, split.validation_idx] = False  # held out from every model, shadows included
    shadows = []
    for k, chosen in enumerate(members):
        key = {"validation": split.validation_fingerprint(), "shadow": k, "shadows_seed": lira.seed}
        shadows.append(trained_shadow(config, split, device, "shadow", key, np.flatnonzero(chosen),
                                      lira.seed + k, f"shadow {k + 1}/{len(members)}"))  # fmt: skip
    return shadows, members


def trained_shadow(config: RunConfig, split: ForgetSplit, device: torch.device, kind: str,
                   key: dict, rows: np.ndarray, seed: int, label: str) -> nn.Module:  # fmt: skip
    """A model of the run's architecture trained on training `rows` with `seed` (initialisation
    and batch order), from the model cache under `kind` and `key` plus the dataset, the model
    config and the device type."""
    data = split.data

    def fresh() -> nn.Module:
        return build_model(config.model, data.input_shape, data.num_classes, seed)

    def train(staging: Path) -> nn.Module:
        model = fresh()
        train_classifier(model, data.x_train, data.y_train, config.model.options.train, device,
                         seed, label, rows=rows, feed=data.feed,
                         checkpoint=staging / "shadow.ckpt")  # fmt: skip
        return model

    key = {"dataset": dataset_key(config.dataset, data), "model": model_key(config.model), **key,
           "device_type": device.type}  # fmt: skip
    return ModelCache(config.run.cache_dir).get_or_train(kind, key, fresh, train).model.to(device)


def phi_of(model: nn.Module, split: ForgetSplit, device, batch_size: int) -> np.ndarray:
    fx, fy = split.forget
    return logit_scaled_confidence(predict_logits(model, fx, device, batch_size), fy)


def shadow_phis(config: RunConfig, split: ForgetSplit, device: torch.device) -> tuple:
    """phi of every forget sample under every shadow model, and which shadows trained on it."""
    shadows, members = shadow_models(config, split, device)
    size = config.evaluation.options.batch_size
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


def add_lira(rows: dict, models: dict, split: ForgetSplit, config: RunConfig, device) -> None:
    """Add `lira_member` to every model's row."""
    shadow_phi, trained_on = shadow_phis(config, split, device)
    for role, model in models.items():
        phi = phi_of(model, split, device, config.evaluation.options.batch_size)
        rows[role]["lira_member"] = lira_member_pct(phi, shadow_phi, trained_on)
    log.info(
        "LiRA with %d shadow models: %s",
        len(shadow_phi),
        ", ".join(f"{r} {rows[r]['lira_member']:.1f}%" for r in models),
    )


def rows_fingerprint(rows: np.ndarray) -> str:
    """A short hash of exactly which training rows a shadow trains on (for its cache key)."""
    return hashlib.sha256(np.sort(rows).astype(np.int64).tobytes()).hexdigest()[:16]


def pair_seeds(config: RunConfig) -> list[int]:
    """s_k of every U-LiRA pair: the K integers from `lira.seed` up, skipping the run's seed and
    the noise floor's (seed + 1), whose models are the ones scored."""
    lira, taken = config.evaluation.options.lira, {config.run.seed, config.run.seed + 1}
    free = (s for s in itertools.count(lira.seed) if s not in taken)
    return list(itertools.islice(free, lira.shadow_models))


def ulira_pair(
    config: RunConfig, split: ForgetSplit, device, seed: int, label: str
) -> tuple[nn.Module, ...]:
    """One pair: (trained like the run's original, then the run's method, with the options it
    ran with, removes the forget set; trained from scratch on the retain set), both with
    `seed`."""
    from unlearn_cli.methods import UnlearnContext, run_method

    def shadow(kind: str, rows: np.ndarray, what: str) -> nn.Module:
        key = {"rows": rows_fingerprint(rows), "seed": seed}
        return trained_shadow(
            config, split, device, kind, key, rows, seed, f"U-LiRA {what} {label}"
        )

    retrained = shadow("ulira_retrain", split.retain_idx, "retrain")
    method_name = config.method.name
    if method_name == "retrain":  # the run's retrain result is its retrained reference too
        return retrained, retrained
    original = shadow("ulira_original", split.trainable_idx, "original")

    def fresh() -> nn.Module:
        return build_model(config.model, split.data.input_shape, split.data.num_classes, seed)

    ctx = UnlearnContext(
        config.model.options.train, device, seed, fresh, config.evaluation.options.batch_size
    )
    seed_globals(seed)  # methods that draw from the global generators repeat across runs
    unlearned = run_method(method_name, copy.deepcopy(original), split, ctx, config.method.options)
    if not finite_on_forget(unlearned, split, device, config.evaluation.options.batch_size):
        log.warning("U-LiRA: %s left shadow %s non-finite; keeping its original's weights",
                    method_name, label)  # fmt: skip
        unlearned = original
    return unlearned, retrained


def seed_globals(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def finite_on_forget(model: nn.Module, split: ForgetSplit, device, batch_size: int) -> bool:
    from unlearn_cli.methods.common import is_finite_model

    if not is_finite_model(model):
        return False
    return bool(np.isfinite(phi_of(model, split, device, batch_size)).all())


def ulira_phis(config: RunConfig, split: ForgetSplit, device) -> tuple[np.ndarray, np.ndarray]:
    """phi of every forget sample under the K "unlearned" and the K "retrained" shadows."""
    seeds, sides = pair_seeds(config), ([], [])
    for k, seed in enumerate(seeds):
        label = f"{k + 1}/{len(seeds)}"
        pair = ulira_pair(config, split, device, seed, label)
        for side, model in zip(sides, pair, strict=True):
            side.append(phi_of(model, split, device, config.evaluation.options.batch_size))
        log.info("U-LiRA: pair %s done (%s)", label, config.method.name)
    return np.stack(sides[0]), np.stack(sides[1])


def looks_unlearned(phi: np.ndarray, phi_a: np.ndarray, phi_b: np.ndarray):
    """Per forget sample: likelier under the "unlearned" Gaussian (A) than the "retrained" one
    (B), and whether both sides have values."""
    side_a = np.zeros((len(phi_a) + len(phi_b), phi.shape[-1]), dtype=bool)
    side_a[: len(phi_a)] = True
    return looks_in_mask(phi, np.concatenate([phi_a, phi_b]), side_a)


def add_ulira(rows: dict, models: dict, split: ForgetSplit, config: RunConfig, device) -> dict:
    """U-LiRA (see the module docstring): adds `ulira_member` to every row; returns
    {"ulira_acc": ..., "ulira_shadows": K} for metrics.json."""
    phi_a, phi_b = ulira_phis(config, split, device)
    looks = {}
    for role, model in models.items():
        phi = phi_of(model, split, device, config.evaluation.options.batch_size)
        looks[role], usable = looks_unlearned(phi, phi_a, phi_b)
        rows[role]["ulira_member"] = (100.0 * float(np.mean(looks[role][usable]))
                                      if usable.any() else float("nan"))  # fmt: skip
    acc = ulira_accuracy(looks["unlearned"][usable], looks["retrain"][usable])
    log.info("U-LiRA with %d shadow pairs: attack accuracy %.1f%% (50%% = like retraining)",
             len(phi_a), acc)  # fmt: skip
    return {"ulira_acc": acc, "ulira_shadows": len(phi_a)}


def ulira_accuracy(unlearned_looks: np.ndarray, retrain_looks: np.ndarray) -> float:
    """Balanced accuracy (%) of calling the unlearned model "unlearned" and the retrained one
    "retrained", sample by sample."""
    if not len(unlearned_looks):
        return float("nan")
    return 50.0 * float(np.mean(unlearned_looks) + np.mean(~retrain_looks))
