"""The copies benchmark (part of `make bench`; docs/copies.md, docs/benchmark.md).

1. **Detectors**: on animal_mnist with 20% of the request given planted copies, each scan's
   recall per augmentation and its precision, on the report seeds, class and random requests.
2. **Scan speed**: the model-free scans and the feature scan of 1,000 request images against
   10,000 retain images (synthetic 28x28 shapes), then against 30,000 and 100,000: the growth
   shows the scan is far from quadratic in practice (medians of several repetitions).
3. **Effect**: `method=retrain` with `request.copies=report` (the oracle trains on the copies)
   and `extend` (it does not): the request's UA and MIA and the accuracy on the planted copies.

The result replaces the marked section of BENCHMARKS.md (or is appended to it).

    python -m unlearn_cli.copies.bench [--seeds 10 11 12] [--markdown BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_module

from unlearn_cli.bench import write_section
from unlearn_cli.copies.options import AUGMENTATIONS
from unlearn_cli.copies.plant import detection_figures, plant_copies
from unlearn_cli.copies.request import CopyCheck, planned_scans
from unlearn_cli.copies.scan import Detectors
from unlearn_cli.data import load_dataset
from unlearn_cli.data.dataset import from_arrays
from unlearn_cli.data.spec import split_from_config
from unlearn_cli.data.split import make_split
from unlearn_cli.device import resolve_threads
from unlearn_cli.evaluation.representation import penultimate_features
from unlearn_cli.host import machine_description
from unlearn_cli.models import build_model
from unlearn_cli.run import run_experiment
from unlearn_cli.run_models import Workshop, the_original
from unlearn_cli.tracking.folder import run_folders
from unlearn_cli.validate import RunConfig, validate_config

START, END = "<!-- copies:start -->", "<!-- copies:end -->"
SCENARIOS = ("random10", "classwise")
SCANS = ("exact", "pixels", "phash", "features")


def config_for(*overrides: str) -> RunConfig:
    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        return validate_config(compose("config", overrides=list(overrides)))


def detector_figures(seeds: list[int], share: float, extra: list[str]) -> pd.DataFrame:
    """One row per (scenario, seed, scan, augmentation): recall; augmentation "precision" holds
    the scan's precision."""
    rows = []
    device = torch.device("cpu")
    for scenario in SCENARIOS:
        for seed in seeds:
            config = config_for(f"experiment={scenario}", f"seed={seed}",
                                f"request.plant.share={share}", *extra)  # fmt: skip
            data = load_dataset(config.dataset, config.run.cache_dir)
            split, planted = plant_copies(split_from_config(data, config),
                                          config.run.request.plant, seed)  # fmt: skip
            original, _ = the_original(Workshop(config, split, device), None)
            probe = build_model(config.model, data.input_shape, data.num_classes, 0)
            scans = planned_scans(config.run.request, split, probe)
            with tempfile.TemporaryDirectory() as folder:
                check = CopyCheck(config.run.request, split, scans, Path(folder),
                                  config.evaluation.options.batch_size)  # fmt: skip
                check.before_model()
                check.with_original(original, device)
            found = detection_figures(planted, check.pairs, scans)
            for aug, by_scan in found["recall"].items():
                rows += [{"scenario": scenario, "seed": seed, "scan": s, "what": aug, "value": v}
                         for s, v in by_scan.items()]  # fmt: skip
            rows += [{"scenario": scenario, "seed": seed, "scan": s, "what": "precision",
                      "value": v} for s, v in found["precision"].items()]  # fmt: skip
            print(f"detectors: {scenario} seed {seed} done ({check.seconds:.1f}s of scans)")
    return pd.DataFrame(rows)


def shape_images(n: int, size: int = 28, seed: int = 0) -> np.ndarray:
    """Synthetic images: five shapes of random grey levels on black, away from the border."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        image = Image.new("L", (size, size))
        draw = ImageDraw.Draw(image)
        for _ in range(5):
            x0, y0 = rng.integers(4, size - 12, size=2)
            x1, y1 = (x0, y0) + rng.integers(3, 9, size=2)
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((int(x0), int(y0), int(x1), int(y1)), fill=int(rng.integers(60, 256)))
        images.append(np.asarray(image))
    return np.stack(images)


def scan_speed(retain_sizes: list[int], queries: int, repeats: int) -> pd.DataFrame:
    """Median seconds of each scan for `queries` request images against each retain size."""
    config = config_for()
    rows = []
    for size in retain_sizes:
        images = shape_images(size + queries + 10, seed=size)
        n = len(images)
        data = from_arrays("shapes", ("a", "b"), images, np.arange(n) % 2, np.arange(n - 10),
                           np.arange(n - 10, n), pixel_max=255.0)  # fmt: skip
        split = make_split(data, None, queries / (n - 10), None, 0, validation_fraction=0.0001)
        model = build_model(config.model, data.input_shape, data.num_classes, 0).eval()
        detect = Detectors(data, SCANS, 1, 0.997, 0.05, 0.98)
        detect.features = lambda x, m=model: penultimate_features(m, x, torch.device("cpu"), 1024)
        for scan in SCANS:
            detect.pairs(split.forget_idx[:10], split.retain_idx[:100], (scan,))  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                detect.pairs(split.forget_idx, split.retain_idx, (scan,))
                times.append(time.perf_counter() - start)
            rows.append({"retain": len(split.retain_idx), "request": len(split.forget_idx),
                         "scan": scan, "seconds": statistics.median(times)})  # fmt: skip
        print(f"speed: {size} retain images done")
    return pd.DataFrame(rows)


def effect(seeds: list[int], share: float, extra: list[str]) -> pd.DataFrame:
    """`method=retrain` with the copies reported (kept in its training set) and extended."""
    rows = []
    for scenario in SCENARIOS:
        for seed in seeds:
            for mode in ("report", "extend"):
                config = config_for(
                    f"experiment={scenario}", f"seed={seed}", f"request.plant.share={share}",
                    f"request.copies={mode}", "method=retrain", "evaluation.noise_floor=false",
                    "evaluation.representation=false", "evaluation.plots=false", *extra,
                )  # fmt: skip
                with tempfile.TemporaryDirectory() as folder:
                    result = run_experiment(config, Path(folder) / "run")
                retrain = result["models"]["retrain"]
                rows.append({"scenario": scenario, "seed": seed, "copies": mode,
                             "UA": retrain["UA"], "MIA": retrain["MIA"],
                             "UA_copied": retrain.get("UA_copied", float("nan")),
                             "copies_acc": retrain.get("copies_acc", float("nan")),
                             "extended_by": result["copies"]["extended_by"]})  # fmt: skip
                print(f"effect: {scenario} seed {seed} {mode} done")
    return pd.DataFrame(rows)


def mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std():.2f}"


def markdown(detectors: pd.DataFrame, speed: pd.DataFrame, effects: pd.DataFrame,
             seeds: list[int], share: float) -> str:  # fmt: skip
    """The section: the parts measured (an empty frame is a part left out)."""
    lines = [START, "## Copies of a request (docs/copies.md)", "",
             f"`python -m unlearn_cli.copies.bench` (run by `make bench`), machine: "
             f"{machine_description()}; {torch.get_num_threads()} torch threads. animal_mnist, "
             f"report seeds {', '.join(map(str, seeds))}, {share:.0%} of the request given 1-3 "
             "planted copies each (`request.plant`), the default thresholds (chosen on the "
             "tuning seeds 0 and 1). Mean ± std over the seeds.", ""]  # fmt: skip
    lines += detector_lines(detectors) + speed_lines(speed) + effect_lines(effects)
    return "\n".join([*lines, END]) + "\n"


def detector_lines(detectors: pd.DataFrame) -> list[str]:
    if detectors.empty:
        return []
    lines = []
    for scenario in SCENARIOS:
        part = detectors[detectors["scenario"] == scenario]
        lines += [f"### Detectors, {scenario}: recall per augmentation, precision", "",
                  "| scan | " + " | ".join((*AUGMENTATIONS, "precision")) + " |",
                  "|---|" + "---:|" * (len(AUGMENTATIONS) + 1)]  # fmt: skip
        for scan in (*SCANS, "any"):
            cells = [mean_std(part[(part["scan"] == scan) & (part["what"] == what)]["value"])
                     for what in (*AUGMENTATIONS, "precision")]  # fmt: skip
            lines.append(f"| {scan} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines + ["Precision counts a pair as right when it is a planted copy of that sample "
                    "or an exact duplicate (animal_mnist's own copies); `any` is the union of "
                    "the scans, what a run reports.", ""]  # fmt: skip


def speed_lines(speed: pd.DataFrame) -> list[str]:
    if speed.empty:
        return []
    lines = ["### Scan speed (synthetic 28x28 shapes, median seconds)", "",
             "| retain images | request | " + " | ".join(SCANS) + " | total |",
             "|---:|---:|" + "---:|" * (len(SCANS) + 1)]  # fmt: skip
    for (retain, request), part in speed.groupby(["retain", "request"], sort=True):
        secs = part.set_index("scan")["seconds"]
        lines.append(f"| {retain:,} | {request:,} | "
                     + " | ".join(f"{secs[s]:.2f}" for s in SCANS)
                     + f" | {secs.sum():.2f} |")  # fmt: skip
    return lines + ["", "The feature scan includes the forward pass of the default CNN over "
                    "every image (untrained here: only its cost matters).", ""]  # fmt: skip


def effect_lines(effects: pd.DataFrame) -> list[str]:
    if effects.empty:
        return []
    lines = ["### Effect: the oracle with and without the copies (`method=retrain`)", "",
             "| scenario | request.copies | extended by | UA | UA_copied | MIA | copies_acc |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for (scenario, mode), part in effects.groupby(["scenario", "copies"], sort=False):
        lines.append(f"| {scenario} | {mode} | {mean_std(part['extended_by'])} | "
                     f"{mean_std(part['UA'])} | {mean_std(part['UA_copied'])} | "
                     f"{mean_std(part['MIA'])} | {mean_std(part['copies_acc'])} |")  # fmt: skip
    return lines + ["", "With `report` the retrained oracle trains on the copies of the request; "
                    "with `extend` it does not. `UA_copied` is UA on the request's samples that "
                    "have planted copies, where the copies act; `copies_acc` is measured on the "
                    "planted copies the retain set still holds (under `extend`, the few the scan "
                    "missed). On class requests the planted copies are hidden members under "
                    "other labels, which no oracle predicts as the class: UA cannot show them, "
                    "and they are reported, never forgotten."]  # fmt: skip


METHODS_START, METHODS_END = "<!-- copies-methods:start -->", "<!-- copies-methods:end -->"
METHOD_FIGURES = ("UA", "UA_copied", "MIA", "copies_acc", "avg_gap")


def methods_effect(paths: list[Path]) -> pd.DataFrame:
    """Every method's unlearned model and its oracle, with the copies reported and extended:
    the run folders of `sweep=bench_copies`."""
    rows = []
    for path in paths:
        for folder in run_folders(path):
            data = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
            if data.get("status") not in ("completed", "diverged") or "copies" not in data:
                continue
            scenario = data["split"].get("scenario", data["config"]["forget"])
            base = {"scenario": scenario, "copies": data["copies"]["mode"],
                    "seed": data["config"]["seed"], "method": data["config"]["method"],
                    "diverged": data["status"] == "diverged"}  # fmt: skip
            for role in ("unlearned", "retrain"):
                model = data["models"].get(role, {})
                figures = {m: model.get(m, float("nan")) for m in METHOD_FIGURES}
                rows.append({**base, "role": role, **figures})
    return pd.DataFrame(rows)


def methods_section(effects: pd.DataFrame) -> str:
    seeds = sorted(effects["seed"].unique())
    lines = [METHODS_START, "### Effect for every method: the copies reported vs extended", "",
             f"`unlearn run -m sweep=bench_copies` (variant=copies: 20% of the request's samples "
             f"given 1-3 planted near-copies), then `python -m unlearn_cli.copies.bench --sweep "
             f"...`; machine: {machine_description()}; seeds {', '.join(map(str, seeds))}, "
             "mean ± std where more than one. `report` keeps the copies in the retain set (the "
             "method and its oracle train on them), `extend` forgets them with the request. The "
             "first row is the oracle (retrain) itself.", ""]  # fmt: skip
    for scenario, part in effects.groupby("scenario", sort=False):
        lines += [f"**{scenario}**", "",
                  "| method | " + " | ".join(f"{m} report | {m} extend" for m in METHOD_FIGURES)
                  + " |", "|---|" + "---:|" * (2 * len(METHOD_FIGURES))]  # fmt: skip
        oracle = part[part["role"] == "retrain"].drop_duplicates(["seed", "copies"])
        named = [("oracle (retrain)", oracle)] + [
            (method, rows) for method, rows in part[part["role"] == "unlearned"].groupby("method")
        ]
        for name, rows in named:
            cells = [mean_std(rows[rows["copies"] == mode][m])
                     for m in METHOD_FIGURES for mode in ("report", "extend")]  # fmt: skip
            if rows["diverged"].any():  # the figures are the model it started from
                name = f"{name} (diverged)"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "A method marked diverged left non-finite weights on some run; the run keeps "
        "the model it started from (the original), whose figures the row then shows.",
        "",
    ]
    return "\n".join([*lines, METHODS_END]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unlearn_cli.copies.bench",
                                     description=__doc__)  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    parser.add_argument("--share", type=float, default=0.2, help="request.plant.share")
    parser.add_argument("--retain", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path, help="update this file's copies section")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["detectors", "effect", "speed"],
        choices=["detectors", "effect", "speed"],
        help="what to measure (the section shows what was measured)",
    )
    parser.add_argument("--sweep", type=Path, nargs="+",
                        help="instead: the every-method effect of these sweep=bench_copies "
                        "folders (its own section)")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="config overrides (threads=1, ...)")
    opts = parser.parse_args(argv)
    if opts.sweep:
        section = methods_section(methods_effect(opts.sweep))
        print(section)
        if opts.markdown:
            write_section(opts.markdown, section, METHODS_START, METHODS_END)
        return 0
    torch.set_num_threads(resolve_threads(config_for(*opts.overrides).run.threads))
    parts = set(opts.parts)
    detectors = detector_figures(opts.seeds, opts.share, opts.overrides) \
        if "detectors" in parts else pd.DataFrame()  # fmt: skip
    effects = effect(opts.seeds, opts.share, opts.overrides) if "effect" in parts \
        else pd.DataFrame()  # fmt: skip
    speed = scan_speed(opts.retain, 1_000, opts.repeats) if "speed" in parts else pd.DataFrame()
    section = markdown(detectors, speed, effects, opts.seeds, opts.share)
    print(section)
    if opts.markdown:
        write_section(opts.markdown, section, START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
