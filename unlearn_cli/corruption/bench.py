"""The corrective benchmark's tables and plots (docs/corrective.md, BENCHMARKS.md).

Reads the run folders of `sweep=bench_corrective` (every method x {poison, confusion} x
`corruption.identified` x the report seeds) and writes, per kind, the affected domain's figures
against the share identified: the methods beside both references (retraining without the
identified samples, and without every manipulated sample), and a plot like Goel et al.'s.

    python -m unlearn_cli.corruption.bench outputs/bench_corrective/<sweep> \
        --markdown BENCHMARKS.md --plots docs/bench
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from unlearn_cli.bench import write_section
from unlearn_cli.evaluation.plots import corrective_plot
from unlearn_cli.host import machine_description
from unlearn_cli.tracking.folder import read_yaml, run_folders

START, END = "<!-- corrective:start -->", "<!-- corrective:end -->"
METRICS = ("acc_corr", "attack_success", "acc_retain", "left_manip_acc", "gap_clean", "val_acc",
           "avg_gap")  # fmt: skip
ROLES = ("original", "retrain", "retrain_clean", "unlearned")
ROLE_NAMES = {"ref_original": "original (manipulated)",
              "ref_retrain": "retrain without the identified",
              "ref_retrain_clean": "retrain without all manipulated"}  # fmt: skip


def collect(paths: list[Path]) -> pd.DataFrame:
    """One row per completed corrective run and model role (the references once per run)."""
    rows = []
    for path in paths:
        for folder in run_folders(path):
            data = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
            if data.get("status") not in ("completed", "diverged") or "corruption" not in data:
                continue
            config = read_yaml(folder / ".hydra" / "config.yaml")
            corruption = config.get("corruption", {})
            identified = float(corruption.get("identified", float("nan")))
            share = float(corruption.get("share", float("nan")))
            kind = data["corruption"]["kind"]
            base = {"label": f"{kind}-{share:g}", "kind": kind, "share": share,
                    "identified": identified,
                    "seed": data["config"]["seed"], "method": data["config"]["method"],
                    "status": data["status"]}  # fmt: skip
            for role in ROLES:
                model = data["models"].get(role, {})
                rows.append({**base, "role": role, **{m: model.get(m) for m in METRICS}})
    table = pd.DataFrame(rows)
    if table.empty:
        raise SystemExit("no completed corrective run under the given folders")
    return table


def role_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The methods' rows, and each reference once per (kind, identified, seed)."""
    unlearned = table[table["role"] == "unlearned"]
    references = table[table["role"] != "unlearned"].drop_duplicates(
        ["label", "identified", "seed", "role"]
    )
    # Named apart from the methods: `retrain` is also a method of the sweep.
    return pd.concat([unlearned, references.assign(method="ref_" + references["role"])])


def means(table: pd.DataFrame) -> pd.DataFrame:
    keys = ["label", "kind", "share", "role", "method", "identified"]
    grouped = role_rows(table).groupby(keys)
    mean = grouped[list(METRICS)].mean()
    std = grouped[list(METRICS)].std().add_suffix("_std")
    seeds = grouped["seed"].nunique().rename("seeds")
    return pd.concat([mean, std, seeds], axis=1).reset_index()


def cell(row: pd.Series, metric: str) -> str:
    value, std = row[metric], row[f"{metric}_std"]
    if pd.isna(value):
        return "-"
    return f"{value:.1f}" if pd.isna(std) else f"{value:.1f} ± {std:.1f}"


def metric_table(summary: pd.DataFrame, label: str, metric: str) -> list[str]:
    part = summary[summary["label"] == label]
    levels = sorted(part["identified"].unique())
    lines = ["| model | " + " | ".join(f"identified {x:g}" for x in levels) + " |",
             "|---|" + "---:|" * len(levels)]  # fmt: skip
    order = [
        *("ref_retrain_clean", "ref_retrain", "ref_original"),
        *sorted(part.loc[part["role"] == "unlearned", "method"].unique()),
    ]
    for name in order:
        rows = part[part["method"] == name].set_index("identified")
        if rows.empty:
            continue
        label = ROLE_NAMES.get(name, name)
        label = f"**{label}**" if name in ROLE_NAMES else label
        cells = [cell(rows.loc[x], metric) if x in rows.index else "-" for x in levels]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def markdown(table: pd.DataFrame, summary: pd.DataFrame, plots: dict[str, Path], note: str,
             base: Path) -> str:  # fmt: skip
    seeds = sorted(table["seed"].unique())
    lines = [START, "## Corrective unlearning: repairing a poisoned or mislabelled model", "",
             f"Machine: {machine_description()}. `unlearn run -m sweep=bench_corrective` (every "
             "method x {poison, confusion} x `corruption.identified` in {0.1, 0.25, 0.5, 1.0} x "
             f"seeds {', '.join(map(str, seeds))}), then `python -m unlearn_cli.corruption.bench`. "
             "Means ± std over seeds; the seeds counted per cell are in benchmarks_corrective.csv. "
             "No default was tuned for this scenario: the methods run with their samples "
             "defaults (a corrective request is judged like a forget list).", ""]  # fmt: skip
    if note:
        lines += [note.strip(), ""]
    variants = summary.drop_duplicates("label").sort_values(
        ["kind", "share"], ascending=[False, True]
    )
    for label, kind, share in variants[["label", "kind", "share"]].itertuples(index=False):
        seeds_here = sorted(table.loc[table["label"] == label, "seed"].unique())
        what = {"poison": "BadNets: 1% of the training rows get a 3x3 white patch bottom-right "
                          "and the target's label (bear)",
                "confusion": "interclass confusion: 1% of the training rows, half from each "
                             "of the two classes the original confuses most, swap labels",
                }[kind]  # fmt: skip
        what = what.replace("1% of", f"{share:.0%} of")
        lines += [f"### {kind}, {share:.0%}: {what} (seeds {', '.join(map(str, seeds_here))})",
                  ""]  # fmt: skip
        if label in plots:
            lines += [f"![{label}]({plots[label].relative_to(base).as_posix()})", ""]
        metrics = [("acc_corr", "acc_corr (%), the affected domain scored against the true "
                                "labels: higher is repaired")]  # fmt: skip
        if kind == "poison":
            metrics.append(("attack_success", "attack success (%), patched test images given "
                                              "the target class: lower is repaired"))  # fmt: skip
        metrics += [("acc_retain", "acc_retain (%), clean accuracy elsewhere"),
                    ("gap_clean", "gap_clean, mean distance to the model wanted (retrain "
                                  "without all manipulated) over the figures above: lower is "
                                  "better")]  # fmt: skip
        for metric, title in metrics:
            lines += [f"**{title}**", "", *metric_table(summary, label, metric), ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unlearn_cli.corruption.bench",
                                     description=__doc__)  # fmt: skip
    parser.add_argument("paths", nargs="+", type=Path, help="the corrective sweep folders")
    parser.add_argument("--markdown", type=Path, help="update this file's corrective section")
    parser.add_argument("--csv", type=Path, default=Path("benchmarks_corrective.csv"))
    parser.add_argument("--plots", type=Path, default=Path("docs/bench"))
    parser.add_argument("--note", default="", help="a paragraph under the section's heading")
    opts = parser.parse_args(argv)
    table = collect(opts.paths)
    summary = means(table)
    summary.to_csv(opts.csv, index=False)
    opts.plots.mkdir(parents=True, exist_ok=True)
    plots = {}
    for label, part in summary.groupby("label"):
        kind, share = part["kind"].iloc[0], part["share"].iloc[0]
        plots[label] = corrective_plot(part, kind, opts.plots / f"corrective-{label}.png",
                                       f"{kind}, {share:.0%} of the training rows")  # fmt: skip
    print(summary[summary["role"] != "unlearned"].to_string())
    if opts.markdown:
        base = opts.markdown.resolve().parent
        plots = {k: p.resolve() for k, p in plots.items()}
        write_section(opts.markdown, markdown(table, summary, plots, opts.note, base), START, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
