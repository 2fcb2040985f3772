"""PNG plots for people: a run's per-class accuracy and MIA confidences, a report's comparisons.

matplotlib with the Agg backend (no display needed); every figure is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from unlearn_cli.atomic import atomic_path  # noqa: E402
from unlearn_cli.evaluation.catalogue import CATALOGUE  # noqa: E402

ROLE_COLOURS = {"original": "#9e9e9e", "retrain": "#2e7d32", "unlearned": "#1565c0"}


def save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path, "a plot") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def per_class_accuracy_plot(per_class: dict[str, dict[str, float]], labels: dict[str, str],
                            forgotten: list[str], path: Path) -> Path:  # fmt: skip
    """Grouped bars: test accuracy of each class under each model; forgotten classes marked."""
    classes = list(next(iter(per_class.values())))
    x = np.arange(len(classes))
    width = 0.8 / len(per_class)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(classes)), 4))
    for i, (role, accs) in enumerate(per_class.items()):
        ax.bar(x + (i - (len(per_class) - 1) / 2) * width, [accs[c] for c in classes], width,
               label=labels.get(role, role), color=ROLE_COLOURS.get(role))  # fmt: skip
    ax.set_xticks(x, [f"{c}\n(forgotten)" if c in forgotten else c for c in classes])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Per-class test accuracy")
    ax.legend(loc="lower right")
    return save(fig, path)


def confidence_histograms(conf: dict[str, dict[str, np.ndarray]], labels: dict[str, str],
                          path: Path) -> Path:  # fmt: skip
    """True-class confidence of forget vs test samples, one panel per model: what MIAs see."""
    fig, axes = plt.subplots(1, len(conf), figsize=(4.2 * len(conf), 3.4), sharey=True)
    bins = np.linspace(0, 1, 26)
    for ax, (role, views) in zip(np.atleast_1d(axes), conf.items(), strict=True):
        ax.hist(views["test"], bins=bins, alpha=0.6, density=True, label="test (unseen)",
                color="#ef6c00")  # fmt: skip
        ax.hist(views["forget"], bins=bins, alpha=0.6, density=True, label="forget",
                color="#1565c0")  # fmt: skip
        ax.set_title(labels.get(role, role))
        ax.set_xlabel("true-class confidence")
    np.atleast_1d(axes)[0].set_ylabel("density")
    np.atleast_1d(axes)[0].legend(loc="upper left")
    fig.suptitle("Membership-inference view: forget vs unseen samples", y=1.03)
    return save(fig, path)


def metric_bars(table: pd.DataFrame, path: Path) -> Path:
    """The gap's metrics (UA/RA/TA/MIA) per method (mean ± std), the retrain level as a dashed
    line, per scenario."""
    metrics = CATALOGUE.names(gap=True)
    scenarios = list(dict.fromkeys(table["scenario"]))
    height = 0.35 * table["method"].nunique() * len(scenarios) + 2
    fig, axes = plt.subplots(
        len(scenarios), len(metrics), squeeze=False, figsize=(4 * len(metrics), height)
    )
    for r, scenario in enumerate(scenarios):
        part = table[table["scenario"] == scenario]
        retrain = part[part["method"] == "retrain"]
        for c, metric in enumerate(metrics):
            ax = axes[r][c]
            colours = ["#2e7d32" if m == "retrain" else "#1565c0" for m in part["method"]]
            ax.barh(part["method"], part[metric], xerr=part.get(f"{metric}_std"), color=colours)
            if not retrain.empty:
                ax.axvline(float(retrain[metric].iloc[0]), color="#2e7d32", linestyle="--")
            ax.set_title(f"{metric} ({scenario})", fontsize=9)
            ax.set_xlim(0, 105)
            if c:
                ax.set_yticklabels([])
            ax.invert_yaxis()
    fig.suptitle("Mean over seeds; dashed line = retrain (the target)")
    fig.tight_layout()
    return save(fig, path)


def tradeoff_scatter(table: pd.DataFrame, path: Path) -> Path:
    """avg_gap (lower is better) against speedup (higher is better), one marker per method."""
    fig, ax = plt.subplots(figsize=(7, 5))
    points = table.dropna(subset=["speedup"])
    points = points[points["method"] != "retrain"]
    if points.empty:
        ax.text(0.5, 0.5, "no unlearning method besides retrain to compare", ha="center")
        ax.set_axis_off()
        return save(fig, path)
    for scenario, part in points.groupby("scenario", sort=False):
        gap = part["avg_gap"].clip(lower=0.01)
        ax.scatter(part["speedup"], gap, label=scenario)
        for (_, row), y in zip(part.iterrows(), gap, strict=True):
            ax.annotate(row["method"], (row["speedup"], y), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    # Both axes span decades; log scales keep the good, crowded corner readable.
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([1, 2, 5, 10, 20, 50, 100])
    ax.set_yticks([0.1, 0.3, 1, 3, 10, 30])
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel("speedup over retrain (log scale; right is faster)")
    ax.set_ylabel("avg_gap to retrain (log scale; lower is better)")
    ax.set_title("Forgetting quality vs cost")
    ax.legend()
    return save(fig, path)


def stream_steps_plot(records: list[dict], path: Path, labels: dict[str, str]) -> Path:
    """A stream step by step: avg_gap to each step's oracle, and UA on the earlier requests
    (it falls where a model re-learns what it forgot), per model."""
    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, title in ((axes[0], "avg_gap", "avg_gap to the step's oracle"),
                              (axes[1], "UA_earlier", "UA on earlier requests (%)")):  # fmt: skip
        # avg_gap is 0 for the oracle by definition; its UA_earlier is the target.
        roles = ("original", "unlearned", "retrain_other_seed")
        for role in roles if metric == "avg_gap" else ("retrain", *roles):
            values = [r["models"].get(role, {}).get(metric) for r in records]
            if all(v is None for v in values):
                continue
            ys = [np.nan if v is None else v for v in values]
            ax.plot(steps, ys, marker="o", label=labels.get(role, role),
                    color=ROLE_COLOURS.get(role, "#6a1b9a"))  # fmt: skip
        ax.set_xlabel("step")
        ax.set_xticks(steps)
        ax.set_title(title)
        ax.legend(loc="best")
    return save(fig, path)


def stream_methods_plot(table: pd.DataFrame, title: str, path: Path) -> Path:
    """One stream over a sweep: avg_gap and UA on earlier requests per step, per method (mean
    ± std over seeds). `table` holds that stream's report rows with their `step`."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    methods = list(dict.fromkeys(table["method"]))
    colours = plt.get_cmap("tab20")  # a sweep has up to ~20 methods: one colour and marker each
    for ax, metric, panel in ((axes[0], "avg_gap", "avg_gap to the step's oracle"),
                              (axes[1], "UA_earlier", "UA on earlier requests (%)")):  # fmt: skip
        for method, part in table.groupby("method", sort=False):
            if metric not in part or part[metric].isna().all():
                continue
            part = part.sort_values("step")
            i = methods.index(method)
            std = part.get(f"{metric}_std")
            if std is not None:  # no bar below 0: these figures are never negative
                std = np.vstack([np.minimum(std.fillna(0), part[metric]), std.fillna(0)])
            ax.errorbar(part["step"], part[metric], yerr=std,
                        marker="osv^D<>ph*"[i % 10], color=colours(i % 20), capsize=3,
                        label=method)  # fmt: skip
        ax.set_xlabel("step")
        ax.set_xticks(sorted(table["step"].unique()))
        ax.set_title(panel)
    axes[0].set_yscale("symlog", linthresh=1.0)  # gaps from ~0 (retrain) to tens of points
    axes[0].set_ylim(bottom=0)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.suptitle(f"{title}: mean ± std over seeds")
    fig.tight_layout()
    return save(fig, path)


def copy_pairs_plot(forget: np.ndarray, copies: np.ndarray, titles: list[str], path: Path) -> Path:
    """Request samples (top row) above the copies found of them (bottom row): uint8 images
    (n, C, H, W), one column per pair, titled with the kind and distance."""
    n = len(forget)
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3.0), squeeze=False)
    for col in range(n):
        for row, images in enumerate((forget, copies)):
            ax = axes[row, col]
            image = images[col]
            shown = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            ax.imshow(shown, cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, col].set_title(titles[col], fontsize=7)
    axes[0, 0].set_ylabel("request", fontsize=8)
    axes[1, 0].set_ylabel("copy", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def corrective_plot(table: pd.DataFrame, kind: str, path: Path, title: str = "") -> Path:
    """Corrective unlearning as in Goel et al.'s figures: acc_corr (and, for poison, the
    attack's success) against the share of the manipulation identified, one line per method
    (mean over seeds) with both references. `table` holds one kind's rows: role, method,
    identified, and the metrics' means."""
    panels = [("acc_corr", "acc_corr (%): the affected domain, true labels")]
    if kind == "poison":
        panels.append(("attack_success", "attack success (%): patched images -> target"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    colours = plt.get_cmap("tab20")
    methods = sorted(table.loc[table["role"] == "unlearned", "method"].unique())
    references = {"retrain": ("retrain without the identified", "black", "--"),
                  "retrain_clean": ("retrain without all manipulated", "#2e7d32", "-")}  # fmt: skip
    for ax, (metric, panel) in zip(axes[0], panels, strict=True):
        for i, method in enumerate(methods):
            part = table[(table["role"] == "unlearned") & (table["method"] == method)]
            part = part.sort_values("identified")
            ax.plot(part["identified"], part[metric], marker="osv^D<>ph*"[i % 10],
                    color=colours(i % 20), linewidth=1, markersize=4, label=method)  # fmt: skip
        for role, (label, colour, style) in references.items():
            part = table[table["role"] == role].groupby("identified")[metric].mean()
            ax.plot(part.index, part.values, color=colour, linestyle=style, linewidth=2.5,
                    label=label)  # fmt: skip
        ax.set_xscale("log")
        ticks = sorted(table["identified"].unique())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("share of the manipulated samples identified")
        ax.set_title(panel)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.suptitle(f"Corrective unlearning, {title or kind}: mean over seeds")
    fig.tight_layout()
    return save(fig, path)
