"""Aggregate run folders into one table: mean +- std over seeds per dataset, scenario and method.

The untouched original model ("original (no unlearning)") and the retrained reference appear as
rows of their own, so every method can be read against doing nothing and against the gold standard.
A third reference row, "retrain, other seed", is the noise floor: how far retrained models of
different seeds are from each other. Below it no method can be told from retraining, so rows whose
mean avg_gap is at most the floor's are marked `within_floor = yes`. The floor comes from the runs'
`retrain_other_seed` model (a retrain of seed+1 measured against the run's retrain) when they have
one, else from every pair of seeds' retrained models (at least two seeds needed).

Runs of one method with different options (a tuning sweep) stay apart: rows are keyed by the
method's options hash too, and labelled with the options that differ, `method (lr=0.01)`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import platform
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.table import Table

from unlearn_cli.atomic import atomic_write_text
from unlearn_cli.errors import UserError
from unlearn_cli.evaluation.metrics import UTILITY_POINTS
from unlearn_cli.evaluation.tables import rich_table
from unlearn_cli.record import flatten, run_status, short_hash

log = logging.getLogger(__name__)

REPORT_METRICS = (
    "UA",
    "RA",
    "TA",
    "MIA",
    "mia_attack_acc",
    "mia_auc",
    "avg_gap",
    # the tuning objective: the gap on UA, RA and the validation split's accuracy and MIA
    "val_gap",
    "time_s",
    "speedup",
    "cost_ratio",
    "setup_s",
    # evaluation.reference=none: what is measured without the retrained oracle
    "unseen_acc",
    "forget_minus_unseen",
    "agree_orig_forget",
)
# evaluation.representation: what the penultimate-layer features show (a table of their own)
INSIDE_METRICS = ("probe_forget_acc", "probe_acc", "knn_forget_acc", "knn_acc", "cka_forget",
                  "cka_test")  # fmt: skip
# read by the pick rule of `unlearn report --pick` (evaluation/pick.py), not shown in the tables
TUNING_METRICS = ("val_acc",)
AGGREGATED = (*REPORT_METRICS, *INSIDE_METRICS, *TUNING_METRICS)
GAP_METRICS = ("UA", "RA", "TA", "MIA")  # the metrics avg_gap averages
CELL = ["dataset", "model", "scenario"]  # one table of the report
GROUP = [*CELL, "method"]
ORIGINAL = "original (no unlearning)"
FLOOR = "retrain, other seed"
FLOOR_ROLE = "retrain_other_seed"  # model role in metrics.json
WITHIN = "within_floor"
DAMAGED = "damaged"  # rows that lost more than UTILITY_POINTS of TA or RA against retrain's
REFERENCE_ROLES = {"original": ORIGINAL, "retrain": "retrain", FLOOR_ROLE: FLOOR}
FLOOR_CAPTION = (
    f'"{FLOOR}": the gap between retrained models of different seeds, the noise floor; '
    f"{WITHIN} = yes where a row's mean avg_gap is at most the floor's, i.e. it cannot be told "
    "from retraining at these seeds."
)

DAMAGED_CAPTION = (
    f"{DAMAGED} = yes where a row's mean TA or RA is more than {UTILITY_POINTS:g} points below "
    "retrain's: it forgot by wrecking the model, which its avg_gap does not show."
)


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


def completed_run(file: Path) -> dict | None:
    """The run's metrics.json data, or None (with a warning) when it did not complete."""
    data = json.loads(file.read_text(encoding="utf-8"))
    status = run_status(data)
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
        row = {**base, "method": name, "method_hash": own_hash}
        yield key, {**row, **{m: metrics.get(m) for m in AGGREGATED}}


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
        cfg, split = data["config"], data["split"]
        base = {
            "dataset": cfg["dataset"],
            "model": model_label(data),
            "seed": cfg["seed"],
            "scenario": f"{split['scenario']}: {split['tag']}",
        }
        if cfg.get("reference") == "none":  # judged without a retrained model: its own cell
            base["scenario"] += " (no reference)"
        method_hash = method_hash_of(cfg)
        cell = (base["dataset"], base["model"], base["scenario"])
        run_key = (*cell, base["seed"], cfg["method"], method_hash)
        if run_key in seen:
            what = "configuration" if method_hash else "method (its options not recorded)"
            log.warning("skipping %s: same %s and seed as %s", file, what, seen[run_key])
            continue
        seen[run_key] = file
        options.setdefault((*cell, cfg["method"], method_hash), cfg.get("method_options"))
        for key, row in role_rows(data, base, method_hash):
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


def mean_std(per_seed: pd.DataFrame) -> pd.DataFrame:
    """mean, sample std and the number of seeds of every metric per row group."""
    for metric in AGGREGATED:  # rows of runs written before a metric existed
        if metric not in per_seed:
            per_seed = per_seed.assign(**{metric: np.nan})
    numeric = per_seed[GROUP + list(AGGREGATED)].astype({m: float for m in AGGREGATED})
    grouped = numeric.groupby(GROUP, sort=False)
    table = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std"))
    table["seeds"] = grouped.size()
    return table.reset_index()


def pairwise_floor(retrain: pd.DataFrame) -> dict[str, Any] | None:
    """The floor from per-seed retrain rows: avg_gap of every pair of distinct seeds.

    UA/RA/TA/MIA of the row are the retrain means (and stds): the level the gap is measured at.
    """
    retrain = retrain.drop_duplicates("seed").astype({m: float for m in GAP_METRICS})
    if len(retrain) < 2:
        return None
    values = retrain[list(GAP_METRICS)].to_numpy()
    gaps = [np.abs(a - b).mean() for a, b in itertools.combinations(values, 2)]
    row: dict[str, Any] = {"method": FLOOR, "seeds": len(retrain)}
    row.update({m: float("nan") for m in AGGREGATED})
    row.update({f"{m}_std": float("nan") for m in AGGREGATED})
    for metric, column in zip(GAP_METRICS, values.T, strict=True):
        row[metric], row[f"{metric}_std"] = column.mean(), pd.Series(column).std(ddof=1)
    row["avg_gap"] = float(np.mean(gaps))
    row["avg_gap_std"] = float(np.std(gaps, ddof=1)) if len(gaps) > 1 else float("nan")
    return row


def computed_floors(per_seed: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Floor rows for the cells whose runs have no retrain_other_seed model."""
    has_floor = set(map(tuple, table.loc[table["method"] == FLOOR, CELL].to_numpy()))
    rows = []
    retrain = per_seed[per_seed["method"] == "retrain"]
    for cell, part in retrain.groupby(CELL, sort=False):
        if cell in has_floor:
            continue
        row = pairwise_floor(part)
        if row is not None:
            rows.append({**dict(zip(CELL, cell, strict=True)), **row})
    return pd.DataFrame.from_records(rows, columns=table.columns)


def within_floor(table: pd.DataFrame) -> list[str]:
    """ "yes" for rows at most as far from retrain as retrain of another seed; "" otherwise."""
    floors = table[table["method"] == FLOOR].set_index(CELL)["avg_gap"].to_dict()
    marks = []
    for _, row in table.iterrows():
        floor = floors.get(tuple(row[CELL]))
        inside = row["method"] != FLOOR and floor is not None and row["avg_gap"] <= floor
        marks.append("yes" if inside else "")
    return marks


def damaged(table: pd.DataFrame) -> list[str]:
    """ "yes" for rows whose mean TA or RA is more than UTILITY_POINTS below retrain's in their
    cell: they forgot by wrecking the model, which avg_gap alone does not show."""
    ref = table[table["method"] == "retrain"].set_index(CELL)[["TA", "RA"]]
    marks = []
    for _, row in table.iterrows():
        cell = tuple(row[CELL])
        lost = cell in ref.index and any(
            ref.loc[cell, m] - row[m] > UTILITY_POINTS for m in ("TA", "RA")
        )
        marks.append("yes" if lost else "")
    return marks


def aggregate(per_seed: pd.DataFrame) -> pd.DataFrame:
    """mean and std over seeds, the noise floor and its marks; sorted by avg_gap per scenario."""
    if per_seed.empty:
        return pd.DataFrame()
    table = mean_std(per_seed)
    floors = computed_floors(per_seed, table)
    if not floors.empty:
        table = pd.concat([table, floors], ignore_index=True)
    table["seeds"] = table["seeds"].astype(int)
    table[WITHIN] = within_floor(table)
    table[DAMAGED] = damaged(table)
    table = table.sort_values([*CELL, "avg_gap"], kind="stable")
    return table.reset_index(drop=True)


def mean_pm_std(row: pd.Series, metric: str) -> str:
    mean, std = row[metric], row.get(f"{metric}_std")
    if pd.isna(mean):
        return "-"
    digits = 3 if metric == "mia_auc" or metric.startswith("cka") else 2
    if pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    shown = table[GROUP + ["seeds"]].copy()
    for metric in AGGREGATED:
        shown[metric] = [mean_pm_std(row, metric) for _, row in table.iterrows()]
    shown[WITHIN] = table.get(WITHIN, "")
    shown[DAMAGED] = table.get(DAMAGED, "")
    shown[FORGOTTEN_IN] = forgotten_in(table)
    return shown


FORGOTTEN_IN = "forgotten_in"
INSIDE_CAPTION = (
    "Penultimate-layer features (evaluation.representation): probe_* / knn_* are a linear probe "
    "and a cosine 5-NN fitted on half the test images of all classes and scored on the other "
    "half (%, `_forget` on the forgotten class); cka_* is linear CKA to the retrained model's "
    "features on the forget set and the test images (1 = the same). "
    f"{FORGOTTEN_IN} (class forgetting): `features` where the method forgot in its outputs (UA "
    "within 10 points of retrain's) and its probe_forget_acc closed at least half of the "
    "original's gap to retrain's; `head only` where it forgot in its outputs but the features "
    "still hold the class; `not forgotten` where the outputs still know it; `probe can't tell` "
    "where the original's probe gap to retrain is within twice the probe's own noise (the "
    "spread between retrains of other seeds, or over seeds), so no verdict on the features "
    "can be drawn."
)
HEAD_ONLY_SHARE = 0.5  # a probe gap closed by less than this share: the features still know it
UA_TOLERANCE = 10.0  # points from retrain's UA that still count as forgotten in the outputs
MIN_PROBE_GAP = 5.0  # original vs retrain probe points below which the probe cannot tell


def forgotten_in(table: pd.DataFrame) -> list[str]:
    """Per row of a class cell: `features`, `head only`, `not forgotten` or `probe can't tell`
    (see INSIDE_CAPTION); "" for the reference rows, other scenarios and cells without probes."""
    refs = {cell: probe_reference(part) for cell, part in table.groupby(CELL, sort=False)}
    return [forgotten_mark(row, refs.get(tuple(row[CELL]))) for _, row in table.iterrows()]


def probe_reference(part: pd.DataFrame) -> dict[str, float] | None:
    """The original's and retrain's probe_forget_acc and retrain's UA in one cell, with the
    probe's noise: the larger of the floor row's distance to retrain and the stds over seeds."""
    by = part.set_index("method")
    if not {ORIGINAL, "retrain"} <= set(by.index) or "probe_forget_acc" not in by:
        return None
    std = by.get("probe_forget_acc_std", pd.Series(dtype=float))
    noise = [std.get(ORIGINAL), std.get("retrain")]
    if FLOOR in by.index:
        noise += [abs(by.loc[FLOOR, "probe_forget_acc"] - by.loc["retrain", "probe_forget_acc"]),
                  std.get(FLOOR)]  # fmt: skip
    known = [n for n in noise if n is not None and not pd.isna(n)]
    return {"original": by.loc[ORIGINAL, "probe_forget_acc"],
            "retrain": by.loc["retrain", "probe_forget_acc"], "UA": by.loc["retrain", "UA"],
            "noise": max(known, default=0.0)}  # fmt: skip


def forgotten_mark(row: pd.Series, ref: dict[str, float] | None) -> str:
    if ref is None or row["method"] in (ORIGINAL, "retrain", FLOOR):
        return ""
    if not str(row["scenario"]).startswith("class") or pd.isna(row.get("probe_forget_acc")):
        return ""
    if abs(row["UA"] - ref["UA"]) > UA_TOLERANCE:
        return "not forgotten"
    gap = ref["original"] - ref["retrain"]
    if pd.isna(gap) or gap < max(MIN_PROBE_GAP, 2 * ref["noise"]):
        return "probe can't tell"
    closed = ref["original"] - row["probe_forget_acc"]
    return "features" if closed >= HEAD_ONLY_SHARE * gap else "head only"


def inside_columns(part: pd.DataFrame, raw: pd.DataFrame) -> list[str]:
    """The representation table's columns: the figures some run measured, and the verdict."""
    cols = [c for c in INSIDE_METRICS if not raw[c].isna().all()]
    if not cols:
        return []
    verdict = [FORGOTTEN_IN] if (part[FORGOTTEN_IN] != "").any() else []
    return ["method", "seeds", *cols, *verdict]


# Shown only where some run measured them: what needs the retrained model, and what a run
# without it (evaluation.reference=none) measures instead.
OPTIONAL_METRICS = ("avg_gap", "val_gap", "speedup", "cost_ratio", "unseen_acc",
                    "forget_minus_unseen", "agree_orig_forget")  # fmt: skip


def cell_columns(part: pd.DataFrame, raw: pd.DataFrame) -> list[str]:
    """The shown columns of one table (`part` displayed, `raw` its numbers): within_floor,
    beside avg_gap, only where a floor exists; optional metrics only where measured."""
    cols = [c for c in ["method", "seeds", *REPORT_METRICS]
            if c not in OPTIONAL_METRICS or not raw[c].isna().all()]  # fmt: skip
    if (part["method"] == FLOOR).any() and "avg_gap" in cols:
        cols.insert(cols.index("avg_gap") + 1, WITHIN)
    if (part[DAMAGED] == "yes").any():
        cols.insert(cols.index("method") + 1, DAMAGED)
    return cols


def grouped_tables(table: pd.DataFrame) -> list[Table]:
    """One rich table per dataset / model / scenario, methods as rows: fits a terminal."""
    shown = display_frame(table)
    tables = []
    for (dataset, model, scenario), part in shown.groupby(CELL, sort=False):
        columns = cell_columns(part, table.loc[part.index])
        rendered = rich_table(part, f"{dataset} / {model} / {scenario}", columns)
        # Labels and the mark are what one reads a row by: let the ± cells wrap, never these.
        for column in rendered.columns:
            if column.header in ("method", WITHIN, DAMAGED):
                column.no_wrap, column.min_width = True, len(column.header)
        captions = {WITHIN: FLOOR_CAPTION, DAMAGED: DAMAGED_CAPTION}
        rendered.caption = " ".join(t for c, t in captions.items() if c in columns) or None
        tables.append(rendered)
        inside = inside_columns(part, table.loc[part.index])
        if inside:
            extra = rich_table(part, f"{dataset} / {model} / {scenario}: inside the model", inside)
            extra.caption = INSIDE_CAPTION
            tables.append(extra)
    return tables


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.system()} {platform.release()}"
    )


def to_markdown(table: pd.DataFrame, title: str, preamble: str = "") -> str:
    shown = display_frame(table)
    lines = [f"# {title}", "", preamble.strip(), ""] if preamble else [f"# {title}", ""]
    lines += [
        f"Machine: {machine_description()}.",
        f"Written {dt.datetime.now().astimezone().isoformat(timespec='minutes')}.",
        "",
    ]
    for (dataset, model, scenario), part in shown.groupby(CELL, sort=False):
        lines += [f"## {dataset} / {model} / {scenario}", ""]
        cols = cell_columns(part, table.loc[part.index])
        if WITHIN in cols:
            lines += [FLOOR_CAPTION, ""]
        if DAMAGED in cols:
            lines += [DAMAGED_CAPTION, ""]
        lines += markdown_rows(part, cols)
        inside = inside_columns(part, table.loc[part.index])
        if inside:
            lines += ["### Inside the model", "", INSIDE_CAPTION, "", *markdown_rows(part, inside)]
    return "\n".join(lines)


def markdown_rows(part: pd.DataFrame, cols: list[str]) -> list[str]:
    lines = ["| " + " | ".join(cols) + " |",
             "|" + "|".join(markdown_align(c) for c in cols) + "|"]  # fmt: skip
    lines += ["| " + " | ".join(str(row[c]) for c in cols) + " |" for _, row in part.iterrows()]
    return [*lines, ""]


def markdown_align(column: str) -> str:
    return {"method": "---", WITHIN: ":---:", DAMAGED: ":---:",
            FORGOTTEN_IN: ":---:"}.get(column, "---:")  # fmt: skip


def write_plots(table: pd.DataFrame, folder: Path) -> list[Path]:
    """The report's bar and trade-off plots, without the floor row.

    The floor is a gap between two retrains, not a model: its UA/RA/TA/MIA would repeat
    retrain's bars, and it has no time to place it on the trade-off plot.
    """
    from unlearn_cli.evaluation.plots import metric_bars, tradeoff_scatter

    folder = Path(folder)
    table = table[table["method"] != FLOOR]
    return [metric_bars(table, folder / "metric_bars.png"),
            tradeoff_scatter(table, folder / "tradeoff.png")]  # fmt: skip


def write_report(
    table: pd.DataFrame, csv: Path | None, markdown: Path | None, title: str, preamble: str = ""
) -> None:
    if csv is not None:
        atomic_write_text(csv, table.to_csv(index=False), "the report CSV")
    if markdown is not None:
        atomic_write_text(markdown, to_markdown(table, title, preamble), "the report Markdown")


BENCH_TITLE = "Benchmarks"
BENCH_PREAMBLE = """
Written by `make bench` (`unlearn run -m sweep=bench`, then `unlearn report --bench`); do not edit
by hand. Protocol (docs/benchmark.md): dataset animal_mnist, the default CNN, the report seeds
10, 11, 12 (every default was tuned on the tuning seeds 0 and 1, never on these); two scenarios,
class-wise (`forget_class=elephant`) and random (`forget_fraction=0.1`); two variants, the full
training set (`animal_mnist`) and an original that memorises 2,000 images
(`animal_mnist[train_limit=2000]`, `variant=memorise`). Each cell is mean ± sample std over the
seeds. Methods run with their per-scenario defaults; a method documented as unsuited to a
scenario (README) is still listed there, for the record. Metrics are percentages
except `mia_auc` (0-1), `time_s` (wall seconds of the unlearning step alone; for retrain, its
training) and `speedup` (retrain time_s / method time_s). `avg_gap` is the mean of |m - m_retrain|
over UA, RA, TA and MIA: lower is better, retrain is 0 by definition. `val_gap`, the tuning
objective, is the same mean with the validation split's accuracy and MIA in place of TA and
MIA: defaults are chosen on it (docs/benchmark.md names those still from earlier avg_gap picks).
`mia_attack_acc` is the
MIA attack's accuracy on its own retain-vs-test fit set: near 50 it separates nothing, and MIA
then says only on which side of an arbitrary boundary the forget set fell (0 and 100 alike).
Rows are sorted by avg_gap;
"original (no unlearning)" is the untouched trained model, the do-nothing reference.
`cost_units` counts network passes (3 x sample gradients + forward-only samples) and
`cost_ratio` is retrain's count over the method's: a figure no machine load moves.
"retrain, other seed" is the noise floor: its avg_gap is the gap between retrained models of
different seeds (a retrain of seed+1 against each run's retrain where the runs have one, else
every pair of the seeds' retrains; its UA/RA/TA/MIA are then retrain's). No method can be told
from retraining below it: `within_floor` says yes where a row's mean avg_gap is at most the floor's.
Retrain's time_s is measured when the retrained model is first trained and kept with it in the
model cache; for fresh timings run `make bench` on a quiet machine after
`rm -r outputs/cache/models`.
Literature reference (CIFAR-10, ResNet-18, random 10%, SalUn Table 1): avg gap fine-tune 3.78,
gradient ascent 4.12, influence unlearning 4.06, random labels 7.15, SalUn 1.15 at 16x retrain.
`ngplus` is NG+ as Deep Unlearn (arXiv 2410.01276) runs it, with its published defaults (10
passes over the retain set, lr 0.01, batch 256, no clipping, eval mode): the baseline that paper
says to beat; `negative_gradient` is our NG+-style method with defaults tuned here. `msg` and
`conv_transpose` are the two methods that paper ranks best.
Each scenario's "Inside the model" table holds the penultimate-layer evidence (README, "What
the representation figures can and cannot show"): linear-probe and 5-NN accuracy on the
forgotten class and on all classes (class forgetting), linear CKA to the retrained model's
features on the forget set and the test images, and `forgotten_in`, which says whether a
method that forgot the class in its outputs also forgot it in its features.
"""
