"""What a metric is and how families of metrics register: the machinery of evaluation/catalogue.py.

A *metric* is one figure of every evaluated model (UA, avg_gap, cka_test): its name, unit, where
it is shown and one line of help. A *family* is a function that computes a few metrics for every
model of a run at once (they share work: one MIA fit gives MIA and mia_attack_acc), registered with
the metrics it returns:

    @CATALOGUE.family("closeness", Metric("agree_forget", "%", "..."), when=has_reference)
    def closeness(ev: Evaluation) -> dict[str, dict[str, float]]: ...

Families run in the order they registered, and a family may read the figures of those before it
(`ev.rows`); the catalogue lists metrics in that order too, which is the order of every table.
A family whose figures are written elsewhere (LiRA trains shadow models from the run's config)
registers without a function: its metrics are still declared, documented and shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn

    from unlearn_cli.data.split import ForgetSplit
    from unlearn_cli.evaluation.options import EvaluationOptions

Targets = Literal["any", "class", "samples"]
Section = Literal["", "main", "inside", "tuning", "stream"]
UNITS = {
    "%": "percent, 0-100",
    "0-1": "a fraction or score from 0 to 1",
    "points": "a difference of percentages",
    "s": "wall seconds",
    "x": "times retrain's",
    "count": "a count",
    "nats": "nats",
    "ratio": "a ratio (see its help)",
}
SECTIONS = {"main": "report", "inside": "inside the model", "tuning": "`--pick` only",
            "stream": "report's stream summary"}  # fmt: skip


@dataclass(frozen=True)
class Metric:
    """One figure of every evaluated model. metrics.json holds every metric a family returns;
    the flags say where else it appears."""

    name: str
    unit: str  # a key of UNITS
    help: str  # one line, for docs/metrics.md
    gap: bool = False  # one of the figures avg_gap averages |m - m_retrain| over
    val_gap: bool = False  # one of the figures val_gap (the tuning objective) averages over
    targets: Targets = "any"  # the forget sets it means something for
    needs: str = ""  # the option (or reference) without which it is not measured
    run_table: bool = True  # a row of the run's table (and a column of metrics.csv)
    report: Section = ""  # the `unlearn report` table that aggregates it over seeds
    # `unlearn report` shows a column only where some run measured it, by default when it
    # needs an option; False keeps the column in every table.
    report_if_measured: bool | None = None
    summary: bool = False  # a column of the sweep summary
    family: str = ""  # set when its family registers

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"metric {self.name}: unit {self.unit!r} is not one of {list(UNITS)}")

    @property
    def digits(self) -> int:
        """Decimals in the report: scores from 0 to 1 need a third."""
        return 3 if self.unit == "0-1" else 2

    @property
    def only_if_measured(self) -> bool:
        return bool(self.needs) if self.report_if_measured is None else self.report_if_measured


@dataclass
class Evaluation:
    """What a family computes from: the run's models and data, and the figures so far."""

    models: dict[str, nn.Module]
    split: ForgetSplit
    options: EvaluationOptions
    seed: int
    device: torch.device
    seconds: dict[str, float | None]
    counts: dict | None
    logits: dict[str, dict[str, torch.Tensor]]  # role -> view (forget, retain, ...) -> logits
    labels: dict[str, torch.Tensor]  # view -> labels
    rows: dict[str, dict[str, float]] = field(default_factory=dict)  # role -> figures so far

    def test_logits(self, role: str) -> torch.Tensor:
        """`role`'s logits on every test image: the run's test view when it drops none (no
        forward pass again), else a pass over the whole test set."""
        from unlearn_cli.inference import predict_logits

        data = self.split.data
        if len(self.labels["test"]) == len(data.y_test):
            return self.logits[role]["test"]
        return predict_logits(self.models[role], data.x_test, self.device, self.options.batch_size)

    @property
    def has_reference(self) -> bool:
        """Whether a retrained model is there to measure against (evaluation.reference)."""
        return "retrain" in self.models


Compute = Callable[[Evaluation], dict[str, dict[str, float]]]


def always(_ev: Evaluation) -> bool:
    return True


@dataclass(frozen=True)
class Family:
    name: str
    metrics: tuple[Metric, ...]
    compute: Compute | None  # None: written by `computed_by`, not by the evaluation loop
    when: Callable[[Evaluation], bool]
    computed_by: str  # the module that computes it, for the documentation


class MetricCatalogue:
    """Families of metrics in registration order; every list of metrics is a query of it."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def family(
        self,
        name: str,
        *metrics: Metric,
        when: Callable[[Evaluation], bool] = always,
        computed_by: str = "",
    ) -> Callable[[Compute], Compute]:
        """Register the decorated function as the family `name`, computing `metrics`."""

        def register(compute: Compute) -> Compute:
            self.add(name, metrics, compute, when, computed_by or compute.__module__)
            return compute

        return register

    def declare(self, name: str, *metrics: Metric, computed_by: str) -> None:
        """Register a family whose figures another module writes into the rows."""
        self.add(name, metrics, None, always, computed_by)

    def add(
        self,
        name: str,
        metrics: tuple[Metric, ...],
        compute: Compute | None,
        when: Callable[[Evaluation], bool],
        computed_by: str,
    ) -> None:
        if name in self._families:
            raise ValueError(f"metric family '{name}' is registered twice")
        known = {m.name for m in self}
        for metric in metrics:
            if metric.name in known:
                raise ValueError(f"metric '{metric.name}' is declared twice")
            known.add(metric.name)
        owned = tuple(replace(m, family=name) for m in metrics)
        self._families[name] = Family(name, owned, compute, when, computed_by)

    def remove(self, name: str) -> None:
        """Drop a family (tests register throw-away ones)."""
        del self._families[name]

    def families(self) -> list[Family]:
        return list(self._families.values())

    def __iter__(self) -> Iterator[Metric]:
        return (m for f in self._families.values() for m in f.metrics)

    def get(self, name: str) -> Metric:
        for metric in self:
            if metric.name == name:
                return metric
        raise KeyError(f"no metric '{name}' in the catalogue")

    def names(self, **flags: object) -> tuple[str, ...]:
        """Names of the metrics whose attributes equal `flags`, in catalogue order:
        names(gap=True), names(report="inside")."""
        return tuple(m.name for m in self if all(getattr(m, k) == v for k, v in flags.items()))

    def compute(self, ev: Evaluation) -> dict[str, dict[str, float]]:
        """Run every family that applies, in order, into `ev.rows`; a figure a family did not
        declare is an error, so nothing reaches metrics.json past the catalogue."""
        for role in ev.models:
            ev.rows.setdefault(role, {})
        for family in self._families.values():
            if family.compute is None or not family.when(ev):
                continue
            declared = {m.name for m in family.metrics}
            for role, figures in family.compute(ev).items():
                stray = set(figures) - declared
                if stray:
                    raise ValueError(f"metric family '{family.name}' returned undeclared "
                                     f"metrics {sorted(stray)}")  # fmt: skip
                ev.rows[role].update(figures)
        return ev.rows
