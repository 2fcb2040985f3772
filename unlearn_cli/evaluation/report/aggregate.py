"""Mean +- std over seeds per dataset, scenario and method, the noise floor and the row marks.

A reference row, "retrain, other seed", is the noise floor: how far retrained models of
different seeds are from each other. Below it no method can be told from retraining, so rows whose
mean avg_gap is at most the floor's are marked `within_floor = yes`. The floor comes from the runs'
`retrain_other_seed` model (a retrain of seed+1 measured against the run's retrain) when they have
one, else from every pair of seeds' retrained models (at least two seeds needed). Rows that lost
more than UTILITY_POINTS of TA or RA against retrain's are marked `damaged = yes`.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from unlearn_cli.evaluation.catalogue import CATALOGUE
from unlearn_cli.evaluation.metrics import UTILITY_POINTS
from unlearn_cli.evaluation.report.collect import CELL, DIVERGED, FLOOR, GROUP, aggregated

WITHIN = "within_floor"
DAMAGED = "damaged"  # rows that lost more than UTILITY_POINTS of TA or RA against retrain's


def mean_std(per_seed: pd.DataFrame) -> pd.DataFrame:
    """mean, sample std and the number of seeds of every metric per row group."""
    metrics = aggregated()
    for metric in metrics:  # rows of runs written before a metric existed
        if metric not in per_seed:
            per_seed = per_seed.assign(**{metric: np.nan})
    numeric = per_seed[GROUP + list(metrics)].astype({m: float for m in metrics})
    grouped = numeric.groupby(GROUP, sort=False)
    table = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std"))
    table["seeds"] = grouped.size()
    if DIVERGED in per_seed:
        table[DIVERGED] = per_seed.groupby(GROUP, sort=False)[DIVERGED].sum().astype(int)
    return table.reset_index()


def pairwise_floor(retrain: pd.DataFrame) -> dict[str, Any] | None:
    """The floor from per-seed retrain rows: avg_gap of every pair of distinct seeds.

    The gap's metrics (UA/RA/TA/MIA) of the row are the retrain means (and stds): the level the
    gap is measured at.
    """
    gap_metrics = CATALOGUE.names(gap=True)
    retrain = retrain.drop_duplicates("seed").astype({m: float for m in gap_metrics})
    if len(retrain) < 2:
        return None
    values = retrain[list(gap_metrics)].to_numpy()
    gaps = [np.abs(a - b).mean() for a, b in itertools.combinations(values, 2)]
    row: dict[str, Any] = {"method": FLOOR, "seeds": len(retrain)}
    row.update({m: float("nan") for m in aggregated()})
    row.update({f"{m}_std": float("nan") for m in aggregated()})
    for metric, column in zip(gap_metrics, values.T, strict=True):
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
