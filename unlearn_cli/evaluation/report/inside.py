"""The inside-the-model verdict: did a method that forgot a class in its outputs also forget it
in its penultimate-layer features (evaluation.representation)? See INSIDE_CAPTION for the rule.
"""

from __future__ import annotations

import pandas as pd

from unlearn_cli.evaluation.report.collect import CELL, FLOOR, ORIGINAL

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
