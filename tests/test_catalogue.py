"""The metric catalogue: one declaration of a metric reaches every table, file and document."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from unlearn_cli.console import out_console
from unlearn_cli.docs import METRICS_BEGIN, METRICS_END, metrics_markdown
from unlearn_cli.evaluation.catalogue import CATALOGUE
from unlearn_cli.evaluation.metric_registry import Evaluation, Metric, MetricCatalogue
from unlearn_cli.evaluation.metrics import per_sample_loss
from unlearn_cli.evaluation.sweep import job_row

from .conftest import TINY

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


@pytest.fixture
def forget_loss_metric():
    """A throw-away family, registered the way a new metric would be, and removed afterwards."""

    def forget_loss(ev: Evaluation) -> dict[str, dict[str, float]]:
        return {role: {"forget_loss": float(per_sample_loss(ev.logits[role]["forget"],
                                                            ev.labels["forget"]).mean())}
                for role in ev.models}  # fmt: skip

    CATALOGUE.family(
        "throwaway",
        Metric("forget_loss", "nats", "mean cross-entropy on the forget set", report="main",
               summary=True),
    )(forget_loss)  # fmt: skip
    yield "forget_loss"
    CATALOGUE.remove("throwaway")


def test_a_metric_declared_in_the_catalogue_only_reaches_every_output(
    forget_loss_metric, run_cli, tmp_path, monkeypatch
):
    monkeypatch.setattr(out_console, "width", 400)  # no header shortened to "forge…"
    run_dir = tmp_path / "run"
    run = run_cli("run", *TINY, f"hydra.run.dir={run_dir}", check=True)
    assert any(line.split("│")[1].strip() == "forget_loss"
               for line in run.stdout.splitlines() if line.count("│") > 2)  # fmt: skip
    models = json.loads((run_dir / "metrics.json").read_text())["models"]
    losses = {role: figures["forget_loss"] for role, figures in models.items()}
    # The retrained model never saw the forgotten class: its loss there is far above the
    # original's, which trained on it. The figure is measured, not merely passed along.
    assert losses["retrain"] > losses["original"] + 1.0
    assert "forget_loss" in pd.read_csv(run_dir / "metrics.csv").columns
    assert job_row(run_dir / "metrics.json")["forget_loss"] == losses["unlearned"]

    markdown = tmp_path / "report.md"
    report = run_cli("report", str(run_dir), "--markdown", str(markdown), check=True)
    assert "forget_loss" in report.stdout.splitlines()[2]  # the header of the first table
    header = next(line for line in markdown.read_text().splitlines() if line.startswith("| method"))
    assert "| forget_loss |" in header
    assert f"{losses['original']:.2f}" in markdown.read_text()


def test_a_family_returning_an_undeclared_figure_fails():
    catalogue = MetricCatalogue()
    catalogue.family("stray", Metric("declared", "%", "x"))(lambda ev: {"a": {"other": 1.0}})
    with pytest.raises(ValueError, match="undeclared metrics \\['other'\\]"):
        catalogue.compute(Evaluation({"a": None}, None, None, 0, None, {}, None, {}, {}))


def test_a_metric_is_declared_once():
    with pytest.raises(ValueError, match="declared twice"):
        CATALOGUE.family("again", Metric("UA", "%", "x"))(lambda ev: {})
    assert "again" not in [f.name for f in CATALOGUE.families()]
    with pytest.raises(ValueError, match="unit"):
        Metric("x", "percent", "x")


def test_every_figure_of_a_run_is_in_the_catalogue(run_cli, tmp_path):
    """metrics.json holds nothing the catalogue does not declare (run.py's LiRA-style figures
    included): with the representation and the reference=none evidence on, and off."""
    declared = set(CATALOGUE.names())
    for name, extra in {"ref": [], "none": ["evaluation.reference=none"]}.items():
        run_dir = tmp_path / name
        run_cli("run", *TINY, "evaluation.representation=true", *extra,
                f"hydra.run.dir={run_dir}", check=True)  # fmt: skip
        models = json.loads((run_dir / "metrics.json").read_text())["models"]
        figures = {k for row in models.values() for k in row}
        assert figures <= declared, figures - declared


def test_gap_sets_and_formats_come_from_the_catalogue():
    assert CATALOGUE.names(gap=True) == ("UA", "RA", "TA", "MIA")
    assert CATALOGUE.names(val_gap=True) == ("UA", "RA", "val_acc", "val_MIA")
    assert CATALOGUE.get("mia_auc").digits == 3 and CATALOGUE.get("UA").digits == 2


def test_every_condition_names_a_real_option():
    from dataclasses import fields

    from unlearn_cli.evaluation.options import EVALUATIONS, EvaluationOptions
    from unlearn_cli.methods import METHODS

    options = {f.name for f in fields(EvaluationOptions)}
    for metric in CATALOGUE:
        for need in filter(None, metric.needs.split(", ")):
            key, _, value = need.partition("=")
            if key == "evaluation":
                assert value in EVALUATIONS.names(), metric.name
            elif key == "method":
                assert value in METHODS.names(), metric.name
            elif key in ("stream", "corruption"):  # measured in a stream's steps, or on a
                assert not value, metric.name  # corrective request (the corruption node)
            elif key.startswith("request."):  # a run option: request.plant (copies/options.py)
                from unlearn_cli.copies.options import RequestOptions

                assert key.removeprefix("request.") in {f.name for f in fields(RequestOptions)}
            else:
                assert key.removeprefix("evaluation.") in options, metric.name


def test_docs_metrics_table_is_current():
    text = DOCS.read_text(encoding="utf-8")
    current = METRICS_BEGIN + text.split(METRICS_BEGIN, 1)[1].split(METRICS_END, 1)[0] + METRICS_END
    assert current == metrics_markdown(), "run: python -m unlearn_cli.docs docs/metrics.md"
