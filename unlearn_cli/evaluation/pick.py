"""`unlearn report --pick`: the pick rule of docs/benchmark.md applied to a tuning sweep.

A tuning sweep (configs/sweep/tune_*.yaml) runs a grid of settings on the tuning seeds and both
benchmark variants. A setting may become a default only if, on every tuning seed and variant:
- it keeps utility: validation accuracy (`val_acc`) and retain accuracy (RA) within
  `UTILITY_POINTS` of the retrained model's (a default must not forget by wrecking the model);
- for a class, it forgets it: UA within `FORGOT_POINTS` of retrain's;
- it costs less than retraining (`cost_ratio` > 1: counted sample passes, no clock), or exact
  retraining, which needs no approximation, is the better default;
and, per variant, its mean `val_gap` is below NOTHING_SHARE of doing nothing's (the original's).
Among those, the pick leaves the least share of the do-nothing gap (mean val_gap / the
original's, averaged over the variants so the memorising variant's larger gaps do not drown the
other). Samples are judged per variant (dataset): a run that forgets samples checks whether its
original memorises and then takes that case's own defaults (`by_targets(..., memorised=)`) or
warns that the method does not forget there (`Options.unsuited_memorising`), so each variant has
its own pick; a class is judged over both at once (no run tells the variants apart). Every
figure is
`val_gap` or a validation/retain figure: the test set plays no part in the choice. Where no
setting qualifies, the method is unsuited to that scenario and says so (`Options.unsuited`).
"""

from __future__ import annotations

import pandas as pd

from unlearn_cli.evaluation.metrics import UTILITY_POINTS
from unlearn_cli.evaluation.report.collect import FLOOR, ORIGINAL

FORGOT_POINTS = 10.0  # a class counts as forgotten when UA is this close to retrain's
# "Beats doing nothing" means by more than noise: a setting that leaves 99% of the do-nothing
# gap (adversarial's gentlest samples rate on the memorising variant: UA 0, as the original's)
# changes nothing a user could rely on.
NOTHING_SHARE = 0.95
# the report's reference rows: every other row is a setting of the grid
REFERENCES = ("retrain", ORIGINAL, FLOOR)
BOTH_VARIANTS = "all variants"  # a class's settings are judged over every variant at once
PICK_COLUMNS = ("variant", "setting", "share", "worst_val_drop", "worst_ra_drop", "forgot",
                "cost_ratio", "verdict")  # fmt: skip


def with_references(per_seed: pd.DataFrame) -> pd.DataFrame:
    """The settings' per-seed rows beside their retrain's and original's figures."""
    keys = ["dataset", "model", "scenario", "seed"]
    ref = per_seed[per_seed["method"] == "retrain"].set_index(keys)
    orig = per_seed[per_seed["method"] == ORIGINAL].set_index(keys)
    rows = per_seed[~per_seed["method"].isin(REFERENCES)].set_index(keys)
    rows = rows.assign(
        val_drop=ref["val_acc"].reindex(rows.index) - rows["val_acc"],
        ra_drop=ref["RA"].reindex(rows.index) - rows["RA"],
        ua_off=(rows["UA"] - ref["UA"].reindex(rows.index)).abs(),
        nothing_gap=orig["val_gap"].reindex(rows.index),
    )
    return rows.reset_index()


def judge(part: pd.DataFrame, is_class: bool) -> dict:
    """The pick rule's figures and verdict for one setting (its rows over seeds and variants)."""
    by_variant = part.groupby("dataset")
    shares = by_variant["val_gap"].mean() / by_variant["nothing_gap"].mean()
    worst_val, worst_ra = part["val_drop"].max(), part["ra_drop"].max()
    forgot = bool((part["ua_off"] <= FORGOT_POINTS).all())
    reasons = []
    if part[["val_gap", "val_drop", "ra_drop"]].isna().any().any():
        reasons.append("no val_gap (runs from before it existed)")
    if worst_val > UTILITY_POINTS or worst_ra > UTILITY_POINTS:
        reasons.append(f"loses more than {UTILITY_POINTS:g} points of accuracy")
    if is_class and not forgot:
        reasons.append("leaves the class recognised on some seed")
    if not (part["cost_ratio"] > 1).all():
        reasons.append("costs as much as retraining")
    if not (shares < NOTHING_SHARE).all():
        reasons.append("no better than doing nothing")
    return {
        "share": float(shares.mean()),
        "worst_val_drop": float(worst_val),
        "worst_ra_drop": float(worst_ra),
        "forgot": "yes" if forgot else "no",
        "cost_ratio": float(part["cost_ratio"].min()),
        "verdict": "; ".join(reasons) or "eligible",
        "variants": int(len(shares)),
        "runs": int(len(part)),
    }


def pick_table(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per (scenario, setting): the pick rule's figures, the chosen one marked `picked`."""
    rows = with_references(per_seed)
    is_class = rows["scenario"].astype(str).str.startswith("class")
    rows["variant"] = rows["dataset"].where(~is_class, BOTH_VARIANTS)
    judged = []
    for (scenario, variant, setting), part in rows.groupby(["scenario", "variant", "method"],
                                                           sort=False):  # fmt: skip
        figures = judge(part, is_class=str(scenario).startswith("class"))
        judged.append({"scenario": scenario, "variant": variant, "setting": setting, **figures})
    table = pd.DataFrame.from_records(judged)
    if table.empty:
        return table
    # Equal shares (settings that converge to the same model): the cheaper one.
    table = table.sort_values(["scenario", "variant", "share", "cost_ratio"],
                              ascending=[True, True, True, False],
                              kind="stable").reset_index(drop=True)  # fmt: skip
    for _, part in table.groupby(["scenario", "variant"], sort=False):
        eligible = part[part["verdict"] == "eligible"]
        if not eligible.empty:
            table.loc[eligible.index[0], "verdict"] = "picked"
    return table


def pick_summary(table: pd.DataFrame) -> list[str]:
    """One line per scenario: the picked setting, or that the method is unsuited there."""
    lines = []
    for (scenario, variant), part in table.groupby(["scenario", "variant"], sort=False):
        where = scenario if variant == BOTH_VARIANTS else f"{scenario} on {variant}"
        picked = part[part["verdict"] == "picked"]
        if picked.empty:
            lines.append(f"{where}: no setting forgets, keeps utility and beats doing nothing "
                         "on every tuning seed; document the method as unsuited here (samples "
                         "on an original that memorises: `unsuited_memorising`)")  # fmt: skip
        else:
            row = picked.iloc[0]
            lines.append(f"{where}: pick {row['setting']} (share of doing nothing's val_gap "
                         f"{row['share']:.2f}, worst validation-accuracy drop "
                         f"{row['worst_val_drop']:.1f})")  # fmt: skip
    return lines
