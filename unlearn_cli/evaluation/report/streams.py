"""Streams in `unlearn report`: each stream's steps side by side, per method.

A stream run's steps are report cells of their own (`stream-random4, step 2: random0.025`,
collect.py). This summary puts them in one table per dataset / model / stream: avg_gap to each
step's oracle, the drift of UA on the earlier requests from the first step that has some to the
last (negative: the model re-learns what it forgot, "relapse"), the drift of RA from the first
step to the last (negative: "erosion"), how the avg_gap of the last step compares with the first
(`gap last/first`: the first step is a single request on the original, so this says how much
the stream costs the method against answering one request) and the cost so far against the
oracles' retrainings at the last step (`cum_cost_ratio`). Means over seeds; the per-step cells
hold the stds.
"""

from __future__ import annotations

import pandas as pd

from unlearn_cli.evaluation.report.collect import FLOOR

STEP = r"^(?P<stream>stream-[^,]+), step (?P<step>\d+): "


def stream_steps(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of `table` that are stream steps, with their `stream` and `step`."""
    parsed = table["scenario"].str.extract(STEP)
    return table[parsed["stream"].notna()].assign(stream=parsed["stream"],
                                                  step=pd.to_numeric(parsed["step"]))  # fmt: skip


def stream_summaries(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, table of strings) per dataset / model / stream in the aggregated `table`."""
    rows = stream_steps(table)
    summaries = []
    for (dataset, model, stream), part in rows.groupby(["dataset", "model", "stream"], sort=False):
        steps = sorted(part["step"].unique())
        lines = [method_line(method, m.set_index("step"), steps)
                 for method, m in part.groupby("method", sort=False)]  # fmt: skip
        summaries.append((f"{dataset} / {model} / {stream}: step by step", pd.DataFrame(lines)))
    return summaries


def method_line(method: str, by_step: pd.DataFrame, steps: list) -> dict[str, str]:
    line = {"method": method}
    for k in steps:
        line[f"avg_gap {int(k)}"] = number(by_step["avg_gap"].get(k))
    first, last = by_step["avg_gap"].get(steps[0]), by_step["avg_gap"].get(steps[-1])
    line["gap last/first"] = number(last / first) if first and len(steps) > 1 else "-"
    if method == FLOOR:  # a gap between two retrainings: no drift, no cost of its own
        return line | {"UA_earlier drift": "", "RA drift": "", "cum_cost_ratio": ""}
    earlier = by_step["UA_earlier"].dropna() if "UA_earlier" in by_step else pd.Series(dtype=float)
    line["UA_earlier drift"] = signed(earlier.iloc[-1] - earlier.iloc[0]) if len(earlier) > 1 \
        else "-"  # fmt: skip
    ra = by_step["RA"].dropna()
    line["RA drift"] = signed(ra.iloc[-1] - ra.iloc[0]) if len(ra) > 1 else "-"
    cost = by_step["cum_cost_ratio"] if "cum_cost_ratio" in by_step else pd.Series(dtype=float)
    line["cum_cost_ratio"] = number(cost.get(steps[-1]))
    return line


def number(value) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.2f}"


def signed(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:+.2f}"
