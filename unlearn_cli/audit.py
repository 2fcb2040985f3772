"""`unlearn audit`: scores over N models per side, the competition's forgetting quality and KLoM.

N retrained models (seeds 0..N-1, from the model cache when present) and, per method, N unlearned
models. How the unlearned side is sampled is `--sampling`:

- `one_original` (the default) matches the official scoring (google-deepmind/unlearning_evaluation,
  main.py): all N unlearnings start from ONE original (seed 0's), with method seeds 0..N-1, so
  only the method's own randomness spreads the unlearned side;
- `per_original`: unlearned model i starts from original i (seed i). The originals' seed-to-seed
  spread joins the unlearned side and overlaps the retrained one more: a more lenient F.

A method that does the same thing whatever its seed gives N identical models from one original:
every forget sample's unlearned spread is 0, epsilon 50, F = 0, as the official code scores it.
The forget set is fixed by the run's own `seed`. audit.json records, per method and model, the
sha256 of the weights the method started from. See evaluation/competition.py for F and
evaluation/klom.py for KLoM (the 95th percentile of per-sample KLoM on the forget set, a fixed
retain subsample and the validation split; the row "retrain (half vs half)" is the floor N models
allow).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from unlearn_cli.atomic import atomic_write_json, atomic_write_text, make_folder
from unlearn_cli.data import load_dataset
from unlearn_cli.data.spec import split_from_config
from unlearn_cli.device import resolve_device, resolve_threads
from unlearn_cli.evaluation.competition import (
    final_score,
    forgetting_quality,
    logit_scaled_confidence,
)
from unlearn_cli.evaluation.klom import klom_p95, margins, retrain_floor
from unlearn_cli.inference import accuracy, predict_logits
from unlearn_cli.methods import METHODS
from unlearn_cli.registry import unknown_choice
from unlearn_cli.run import GivenOriginal, build_models, seed_everything
from unlearn_cli.validate import RunConfig, method_defaults

log = logging.getLogger(__name__)

KLOM_RETAIN_SAMPLES = 1000  # a fixed subsample: KLoM's per-sample histograms cost N x samples
FLOOR_ROW = "retrain (half vs half)"
# `--sampling`: how the N unlearned models are drawn (the first is the default).
SAMPLINGS = {
    "one_original": "N unlearnings of one original (seed 0), method seeds 0..N-1: the official "
    "competition score",
    "per_original": "unlearned model i from original i (seed i): adds the originals' spread, "
    "more lenient",
}


@dataclass
class Collected:
    """Per role (retrain and each method), what each of its N models gave."""

    scores: dict[str, list[np.ndarray]] = field(default_factory=dict)
    utility: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    margin: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)
    started_from: dict[str, list[dict]] = field(default_factory=dict)


def run_audit(
    config: RunConfig,
    methods: list[str],
    n_models: int,
    out_dir: Path,
    sampling: str = "one_original",
) -> pd.DataFrame:
    if sampling not in SAMPLINGS:
        raise unknown_choice("audit sampling", sampling, SAMPLINGS)
    for name in methods:
        METHODS.get(name)
    device = resolve_device(config.run.device)
    torch.set_num_threads(resolve_threads(config.run.threads))  # as `unlearn run` does
    data = load_dataset(config.dataset, config.run.cache_dir)
    split = split_from_config(data, config)
    views = klom_views(split)
    got = collect(config, methods, n_models, sampling, split, views, device)
    rows = score_rows(got, methods, n_models, list(views))
    table = pd.DataFrame(rows)
    make_folder(out_dir, "the audit folder")
    atomic_write_text(out_dir / "audit.csv", table.to_csv(index=False), "the audit table")
    atomic_write_json(out_dir / "audit.json", {"forget": split.describe(), "sampling": sampling,
                                               "started_from": got.started_from, "rows": rows},
                      "the audit's JSON")  # fmt: skip
    return table


def collect(config: RunConfig, methods, n_models, sampling, split, views, device) -> Collected:
    """Build (or load) every model the audit scores and take its confidences, margins and
    accuracies. With `one_original`, seed 0's original is the start of every unlearning."""
    got = Collected()
    for role in ["retrain", *methods]:
        got.scores[role], got.utility[role] = [], []
        got.margin[role] = {v: [] for v in views}
    # The run's own method keeps its options; the others run with their defaults.
    picks = {
        name: config.method if config.method.name == name
        else method_defaults(name, config.run.targets)
        for name in methods
    }  # fmt: skip
    # The audit's N retrains are its own floor: no noise-floor retraining per model.
    evaluation = replace(config.evaluation,
                         options=replace(config.evaluation.options, noise_floor=False))  # fmt: skip
    start: GivenOriginal | None = None  # one_original: the original, once it is built
    for i in range(n_models):
        for name in methods:
            variant = replace(config, run=replace(config.run, seed=i), method=picks[name],
                              evaluation=evaluation)  # fmt: skip
            seed_everything(i)
            models = build_models(variant, split, device, given=start).models
            sha = start.sha256 if start else weights_sha256(models["original"])
            if sampling == "one_original" and start is None:
                start = GivenOriginal(models["original"], sha)
            got.started_from.setdefault(name, []).append(
                {"seed": i, "original_seed": 0 if start else i, "original_sha256": sha}
            )
            roles = {name: models["unlearned"]}
            if name == methods[0]:
                roles["retrain"] = models["retrain"]
            for role, model in roles.items():
                take(got, role, model, split, views, device, evaluation.options.batch_size)
            log.info("audit: model %d/%d of %s done", i + 1, n_models, name)
    return got


def take(got: Collected, role: str, model: nn.Module, split, views, device, batch: int) -> None:
    fx, fy = split.forget
    logits = predict_logits(model, fx, device, batch)
    got.scores[role].append(logit_scaled_confidence(logits, fy))
    for view, (x, y) in views.items():
        view_logits = logits if view == "forget" else predict_logits(model, x, device, batch)
        got.margin[role][view].append(margins(view_logits, y))
    got.utility[role].append(utility_of(model, split, device, batch))


def score_rows(got: Collected, methods: list[str], n_models: int, views: list[str]) -> list[dict]:
    rows = []
    ra_r, ta_r = np.mean(got.utility["retrain"], axis=0)
    oracle = {v: np.stack(m) for v, m in got.margin["retrain"].items()}
    for name in methods:
        f, eps = forgetting_quality(np.stack(got.scores["retrain"]), np.stack(got.scores[name]))
        ra_u, ta_u = np.mean(got.utility[name], axis=0)
        rows.append({"method": name, "models": n_models, "F": f,
                     "final_score": final_score(f, ra_u, ra_r, ta_u, ta_r),
                     "RA": ra_u, "TA": ta_u, "RA_retrain": ra_r, "TA_retrain": ta_r,
                     "median_epsilon": float(np.median(eps)),
                     **{f"klom_{v}_p95": klom_p95(np.stack(got.margin[name][v]), oracle[v])
                        for v in views}})  # fmt: skip
    nan = float("nan")
    rows.append({"method": FLOOR_ROW, "models": n_models // 2, "F": nan, "final_score": nan,
                 "RA": ra_r, "TA": ta_r, "RA_retrain": ra_r, "TA_retrain": ta_r,
                 "median_epsilon": nan,
                 **{f"klom_{v}_p95": retrain_floor(oracle[v]) for v in views}})  # fmt: skip
    return rows


def weights_sha256(model: nn.Module) -> str:
    """sha256 of a model's weights and buffers (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def klom_views(split) -> dict[str, tuple]:
    """The samples KLoM is reported on: the forget set, a fixed retain subsample and the
    validation split (empty views are left out)."""
    rx, ry = split.retain
    keep = np.random.default_rng(0).permutation(len(ry))[:KLOM_RETAIN_SAMPLES]
    keep = torch.as_tensor(np.sort(keep))
    views = {"forget": split.forget, "retain": (rx[keep], ry[keep]), "validation": split.validation}
    return {v: xy for v, xy in views.items() if len(xy[1])}


def utility_of(model, split, device, batch_size: int) -> tuple[float, float]:
    rx, ry = split.retain
    tx, ty = split.test
    return (accuracy(predict_logits(model, rx, device, batch_size), ry),
            accuracy(predict_logits(model, tx, device, batch_size), ty))  # fmt: skip


def audit_dir(tag: str) -> Path:
    return Path("outputs") / "audits" / f"{dt.datetime.now():%Y-%m-%d_%H-%M-%S-%f}_{tag}"
