"""Reading run folders into one row per (scenario, seed, model): the report's input.

Every completed run gives rows for its unlearned model and its reference models (the original,
retrain and the noise floor's retrain of another seed). Runs of one method with different options
(a tuning sweep) stay apart: rows are keyed by the method's options hash too, and labelled with
the options that differ, `method (lr=0.01)`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from unlearn_cli.errors import UserError
from unlearn_cli.evaluation.catalogue import CATALOGUE
from unlearn_cli.liveness import run_status
from unlearn_cli.record import flatten, short_hash

log = logging.getLogger(__name__)

CELL = ["dataset", "model", "scenario"]  # one table of the report
GROUP = [*CELL, "method"]
ORIGINAL = "original (no unlearning)"
FLOOR = "retrain, other seed"
FLOOR_ROLE = "retrain_other_seed"  # model role in metrics.json
CLEAN = "retrain without every manipulated sample"  # corrective runs: the model wanted
REFERENCE_ROLES = {"original": ORIGINAL, "retrain": "retrain", FLOOR_ROLE: FLOOR,
                   "retrain_clean": CLEAN}  # fmt: skip


def aggregated() -> tuple[str, ...]:
    """The metrics the report averages over seeds: its table's, its "inside the model" table's,
    and those only the pick rule of `--pick` reads (evaluation/pick.py)."""
    return tuple(m for section in ("main", "inside", "tuning", "stream")
                 for m in CATALOGUE.names(report=section))  # fmt: skip


def find_metrics(paths: Iterable[Path | str]) -> list[Path]:
    """metrics.json of the given run folders, or of every run below the given sweep folders."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"no such run or sweep folder: {path}")
        found += (
            [path / "metrics.json"]
            if (path / "metrics.json").is_file()
            else sorted(path.rglob("metrics.json"))
        )
    if not found:
        raise UserError("no metrics.json found under the given folders")
    return found


DIVERGED = "diverged"  # per seed 1.0 where the run's method diverged; the report counts them


def completed_run(file: Path) -> dict | None:
    """The run's metrics.json data, or None (with a warning) when it did not complete. A run
    whose method diverged counts, with its figures (its unlearned model is the last good
    weights): the report marks it `diverged`, as it is a result about the method."""
    data = json.loads(file.read_text(encoding="utf-8"))
    status = run_status(data)
    if status == "diverged" and "unlearned" in data.get("models", {}):
        return data
    if status != "completed":
        hint = ""
        if status == "killed":
            process = data["process"]
            hint = (f" (process {process.get('pid')} on {process.get('host')} is gone; rerun the "
                    "same config to resume)")  # fmt: skip
        log.warning("skipping %s: %s%s", file.parent, status, hint)
        return None
    return data


def model_label(data: dict) -> str:
    """The model's label; a user's own original (original.checkpoint) is named by its hash, as
    runs on different originals are different experiments."""
    given = data.get("original_checkpoint")
    label = data["config"]["model"]
    return f"{label} (original {given['sha256'][:8]})" if given else label


def method_hash_of(cfg: dict) -> str:
    """The method options' hash; "" for runs written before it was recorded (one configuration)."""
    if cfg.get("method_hash"):
        return cfg["method_hash"]
    options = cfg.get("method_options")
    return short_hash(options) if options is not None else ""


def role_rows(data: dict, base: dict, method_hash: str) -> Iterator[tuple[tuple, dict]]:
    """(key, row) for each model of one run.

    Reference models do not depend on the method's options, so their key has no hash and every
    run of a seed shares them; the unlearned model's key has the hash, so configurations stay apart.
    """
    method = data["config"]["method"]
    roles = dict(REFERENCE_ROLES)
    # retrain's unlearned model is its reference, except without one (evaluation.reference=none)
    if method != "retrain" or "retrain" not in data["models"]:
        roles["unlearned"] = method
    for role, name in roles.items():
        metrics = data["models"].get(role)
        if metrics is None:
            continue  # retrain_other_seed is optional
        own_hash = method_hash if role == "unlearned" else ""
        key = (base["dataset"], base["model"], base["scenario"], base["seed"], name, own_hash)
        row = {
            **base,
            "method": name,
            "method_hash": own_hash,
            DIVERGED: float(role == "unlearned" and data.get("status") == "diverged"),
        }
        yield key, {**row, **{m: metrics.get(m) for m in aggregated()}}


def scenarios(data: dict) -> Iterator[tuple[str, dict]]:
    """(scenario label, the run's data as one scenario): a run is one; a stream is one per step,
    `stream <name>, step k: <request>`, judged against that step's oracle (stream/run.py)."""
    if "steps" not in data:
        split = data["split"]
        yield f"{split['scenario']}: {split['tag']}", data
        return
    for step in data["steps"]:
        if not step["models"]:  # a learn step: nothing unlearned, nothing judged
            continue
        label = f"{data['config']['forget']}, step {step['step']}: {step['request']['tag']}"
        # The cost so far against the oracles' retrainings is the stream's, not the step's own.
        models = {**step["models"], "unlearned": {**step["models"]["unlearned"],
                  "cum_cost_ratio": step["cumulative"]["cost_ratio"]}}  # fmt: skip
        yield label, {**data, "models": models}


def per_seed_rows(files: list[Path]) -> pd.DataFrame:
    """One row per (scenario, seed, method configuration) from completed runs, plus references.

    A second run of the same configuration and seed (a true duplicate) is skipped with a warning
    that names it: it used to vanish in silence.
    """
    rows: dict[tuple, dict] = {}
    seen: dict[tuple, Path] = {}  # the run that gave each (cell, seed, method, hash)
    options: dict[tuple, dict | None] = {}  # (cell, method, hash) -> method options
    for file in files:
        data = completed_run(file)
        if data is None:
            continue
        cfg = data["config"]
        method_hash = method_hash_of(cfg)
        for scenario, judged in scenarios(data):
            base = {"dataset": cfg["dataset"], "model": model_label(data), "seed": cfg["seed"],
                    "scenario": scenario}  # fmt: skip
            if cfg.get("reference") == "none":  # judged without a retrained model: its own cell
                base["scenario"] += " (no reference)"
            cell = (base["dataset"], base["model"], base["scenario"])
            run_key = (*cell, base["seed"], cfg["method"], method_hash)
            if run_key in seen:
                what = "configuration" if method_hash else "method (its options not recorded)"
                log.warning("skipping %s: same %s and seed as %s", file, what, seen[run_key])
                continue
            seen[run_key] = file
            options.setdefault((*cell, cfg["method"], method_hash), cfg.get("method_options"))
            for key, row in role_rows(judged, base, method_hash):
                rows.setdefault(key, row)
    frame = pd.DataFrame.from_records(list(rows.values()))
    return label_configurations(frame, options)


def option_text(value: Any) -> str:
    """A value as a Hydra override would spell it: 0.001, null, true, adam."""
    return value if isinstance(value, str) else json.dumps(value)


def configuration_labels(method: str, configs: dict[str, dict | None]) -> dict[str, str]:
    """method hash -> row label: the bare method name, or with the options that differ.

    Only the differing options are shown, so a tuning sweep's rows read `method (lr=0.01)`.
    """
    if len(configs) < 2:
        return {h: method for h in configs}
    flat = {h: flatten(o) for h, o in configs.items() if o is not None}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    differ = [k for k in keys if len({option_text(f.get(k, "<unset>")) for f in flat.values()}) > 1]
    labels = {}
    for h in configs:
        if h not in flat:
            labels[h] = f"{method} (options not recorded)"
            continue
        shown = ", ".join(f"{k}={option_text(flat[h][k])}" for k in differ if k in flat[h])
        labels[h] = f"{method} ({shown or h})"
    if len(set(labels.values())) < len(labels):  # cannot happen for distinct options; be safe
        labels = {h: f"{label} #{h[:6]}" for h, label in labels.items()}
    return labels


def label_configurations(frame: pd.DataFrame, options: dict[tuple, dict | None]) -> pd.DataFrame:
    """Replace the method name by a per-configuration label where a method has several."""
    if frame.empty:
        return frame
    by_method: dict[tuple, dict[str, dict | None]] = {}
    for (*cell, method, method_hash), opts in options.items():
        by_method.setdefault((*cell, method), {})[method_hash] = opts
    labels = {
        (*group, h): label
        for group, configs in by_method.items()
        for h, label in configuration_labels(group[-1], configs).items()
    }
    keys = zip(*(frame[c] for c in [*GROUP, "method_hash"]), strict=True)
    frame["method"] = [labels.get(key, key[-2]) for key in keys]
    return frame.drop(columns="method_hash")
