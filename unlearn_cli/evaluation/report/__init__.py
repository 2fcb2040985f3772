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

# (This docstring is `unlearn report --help`.) The steps, one module each: collect (run folders
# -> per-seed rows), aggregate (over seeds, the floor and the marks), inside (the inside-the-model
# verdict), render (rich, Markdown, CSV, plots); bench_text holds BENCHMARKS.md's opening prose.
# The columns come from evaluation/catalogue.py.

from unlearn_cli.evaluation.report.aggregate import DAMAGED, WITHIN, aggregate
from unlearn_cli.evaluation.report.bench_text import BENCH_PREAMBLE, BENCH_TITLE
from unlearn_cli.evaluation.report.collect import (
    FLOOR,
    FLOOR_ROLE,
    ORIGINAL,
    configuration_labels,
    find_metrics,
    per_seed_rows,
)
from unlearn_cli.evaluation.report.inside import forgotten_in
from unlearn_cli.evaluation.report.render import (
    DAMAGED_CAPTION,
    FLOOR_CAPTION,
    grouped_tables,
    to_markdown,
    write_plots,
    write_report,
)

__all__ = [
    "BENCH_PREAMBLE",
    "BENCH_TITLE",
    "DAMAGED",
    "DAMAGED_CAPTION",
    "FLOOR",
    "FLOOR_CAPTION",
    "FLOOR_ROLE",
    "ORIGINAL",
    "WITHIN",
    "aggregate",
    "configuration_labels",
    "find_metrics",
    "forgotten_in",
    "grouped_tables",
    "per_seed_rows",
    "to_markdown",
    "write_plots",
    "write_report",
]
