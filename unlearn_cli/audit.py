"""`unlearn audit`: scores over N models per side, the competition's forgetting quality and KLoM.

N original and N retrained models (seeds 0..N-1, from the model cache when present) and, per
method, N unlearned models (each method applied to original i with seed i). The forget set is
fixed by the run's own `seed`. See evaluation/competition.py for F and evaluation/klom.py for KLoM
(the 95th percentile of per-sample KLoM on the forget set, a fixed retain subsample and the
validation split; the row "retrain (half vs half)" is the floor N models allow).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from unlearn_cli.atomic import atomic_write_json, atomic_write_text, make_folder
from unlearn_cli.data import load_dataset
from unlearn_cli.data.spec import split_from_config
from unlearn_cli.device import resolve_device
from unlearn_cli.evaluation.competition import (
    final_score,
    forgetting_quality,
    logit_scaled_confidence,
)
from unlearn_cli.evaluation.klom import klom_p95, margins, retrain_floor
from unlearn_cli.inference import accuracy, predict_logits
from unlearn_cli.methods import METHODS
from unlearn_cli.run import build_models, seed_everything
from unlearn_cli.validate import validate_config

log = logging.getLogger(__name__)

KLOM_RETAIN_SAMPLES = 1000  # a fixed subsample: KLoM's per-sample histograms cost N x samples
FLOOR_ROW = "retrain (half vs half)"


def run_audit(cfg: DictConfig, methods: list[str], n_models: int, out_dir: Path) -> pd.DataFrame:
    for name in methods:
        METHODS.get(name)
    validate_config(cfg)
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.dataset, cfg.cache_dir)
    split = split_from_config(data, cfg)
    fx, fy = split.forget
    views = klom_views(split)
    scores: dict[str, list[np.ndarray]] = {"retrain": []}
    utility: dict[str, list[tuple[float, float]]] = {"retrain": []}
    margin: dict[str, dict[str, list[np.ndarray]]] = {"retrain": {v: [] for v in views}}
    for name in methods:
        scores[name], utility[name] = [], []
        margin[name] = {v: [] for v in views}
    method_cfgs = {
        name: cfg.method if cfg.method.name == name else method_defaults(name) for name in methods
    }
    base = OmegaConf.to_container(cfg, resolve=True)
    for i in range(n_models):
        for name in methods:
            method_cfg = OmegaConf.to_container(method_cfgs[name], resolve=True)
            run_cfg = OmegaConf.create({**base, "seed": i, "method": method_cfg})
            run_cfg.evaluation.noise_floor = False  # the audit's N retrains are its own floor
            seed_everything(i)
            models = build_models(run_cfg, split, device).models
            roles = {name: models["unlearned"]}
            if name == methods[0]:
                roles["retrain"] = models["retrain"]
            for role, model in roles.items():
                logits = predict_logits(model, fx, device, cfg.evaluation.batch_size)
                scores[role].append(logit_scaled_confidence(logits, fy))
                for view, (x, y) in views.items():
                    view_logits = logits if view == "forget" else predict_logits(
                        model, x, device, cfg.evaluation.batch_size)  # fmt: skip
                    margin[role][view].append(margins(view_logits, y))
                utility[role].append(utility_of(model, split, device, cfg.evaluation.batch_size))
            log.info("audit: model %d/%d of %s done", i + 1, n_models, name)
    rows = []
    ra_r, ta_r = np.mean(utility["retrain"], axis=0)
    oracle = {v: np.stack(m) for v, m in margin["retrain"].items()}
    for name in methods:
        f, eps = forgetting_quality(np.stack(scores["retrain"]), np.stack(scores[name]))
        ra_u, ta_u = np.mean(utility[name], axis=0)
        rows.append({"method": name, "models": n_models, "F": f,
                     "final_score": final_score(f, ra_u, ra_r, ta_u, ta_r),
                     "RA": ra_u, "TA": ta_u, "RA_retrain": ra_r, "TA_retrain": ta_r,
                     "median_epsilon": float(np.median(eps)),
                     **{f"klom_{v}_p95": klom_p95(np.stack(margin[name][v]), oracle[v])
                        for v in views}})  # fmt: skip
    nan = float("nan")
    rows.append({"method": FLOOR_ROW, "models": n_models // 2, "F": nan, "final_score": nan,
                 "RA": ra_r, "TA": ta_r, "RA_retrain": ra_r, "TA_retrain": ta_r,
                 "median_epsilon": nan,
                 **{f"klom_{v}_p95": retrain_floor(oracle[v]) for v in views}})  # fmt: skip
    table = pd.DataFrame(rows)
    make_folder(out_dir, "the audit folder")
    atomic_write_text(out_dir / "audit.csv", table.to_csv(index=False), "the audit table")
    atomic_write_json(out_dir / "audit.json", {"forget": split.describe(), "rows": rows},
                      "the audit's JSON")  # fmt: skip
    return table


def klom_views(split) -> dict[str, tuple]:
    """The samples KLoM is reported on: the forget set, a fixed retain subsample and the
    validation split (empty views are left out)."""
    rx, ry = split.retain
    keep = np.random.default_rng(0).permutation(len(ry))[:KLOM_RETAIN_SAMPLES]
    keep = torch.as_tensor(np.sort(keep))
    views = {"forget": split.forget, "retain": (rx[keep], ry[keep]), "validation": split.validation}
    return {v: xy for v, xy in views.items() if len(xy[1])}


def method_defaults(name: str) -> DictConfig:
    from hydra import compose, initialize_config_module

    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        return compose("config", overrides=[f"method={name}"]).method


def utility_of(model, split, device, batch_size: int) -> tuple[float, float]:
    rx, ry = split.retain
    tx, ty = split.test
    return (accuracy(predict_logits(model, rx, device, batch_size), ry),
            accuracy(predict_logits(model, tx, device, batch_size), ty))  # fmt: skip


def audit_dir(tag: str) -> Path:
    return Path("outputs") / "audits" / f"{dt.datetime.now():%Y-%m-%d_%H-%M-%S-%f}_{tag}"
