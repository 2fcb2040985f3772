"""Per-scenario method defaults: `auto` becomes the class or the samples default of a field,
chosen by what the run forgets; explicit values win; unsuited methods say so in the log."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from unlearn_cli.data import load_dataset
from unlearn_cli.data.spec import split_from_config
from unlearn_cli.methods import METHODS, UnlearnContext, options_type, run_method
from unlearn_cli.methods.base import log_method_defaults
from unlearn_cli.options import TARGETS, accepts, hints_of, targets_defaults
from unlearn_cli.validate import validate_config

from .conftest import TINY

PER_SCENARIO = [(m, k) for m in METHODS.names() for k in targets_defaults(options_type(m))]


def test_some_methods_have_per_scenario_defaults():
    assert ("influence", "scale") in PER_SCENARIO and ("adversarial", "reference") in PER_SCENARIO


@pytest.mark.parametrize(("method", "key"), PER_SCENARIO, ids=lambda v: str(v))
def test_both_scenario_defaults_are_valid_values(method, key):
    schema = options_type(method)
    hint = hints_of(schema)[key]
    per = targets_defaults(schema)[key]
    assert set(per) == set(TARGETS)
    for targets in TARGETS:
        assert per[targets] != "auto" and accepts(hint, per[targets], "method", key)[0]
        resolved = schema().for_targets(targets)
        assert getattr(resolved, key) == per[targets]
        resolved.check("method")  # the resolved defaults pass the cross-field rules


@pytest.mark.parametrize(
    ("forget", "targets"),
    [([], "class"), (["forget_class=1"], "class"), (["forget_fraction=0.1"], "samples")],
)
def test_validation_resolves_auto_for_what_the_run_forgets(make_cfg, forget, targets):
    typed = validate_config(make_cfg(*TINY, "method=influence", *forget))
    assert typed.run.targets == targets
    assert typed.method.scale == targets_defaults(type(typed.method))["scale"][targets]


def test_an_explicit_value_applies_to_both_scenarios(make_cfg):
    for forget in ("forget_class=1", "forget_fraction=0.1"):
        typed = validate_config(make_cfg(*TINY, "method=influence", "method.scale=2.5", forget))
        assert typed.method.scale == 2.5


def test_a_forget_list_uses_the_samples_defaults(make_cfg, tmp_path):
    ids = tmp_path / "request.txt"
    ids.write_text("0\n1\n2\n")
    typed = validate_config(make_cfg(*TINY, "method=adversarial", f"forget_indices_file={ids}"))
    assert typed.run.targets == "samples" and typed.method.reference == "heldout"


def test_run_method_resolves_auto_for_direct_callers(make_cfg, monkeypatch):
    """A caller that passes the schema's defaults (`auto` in them) gets the split's values."""
    cfg = make_cfg(*TINY, "forget_fraction=0.2")
    split = split_from_config(load_dataset(cfg.dataset, cfg.cache_dir), cfg)
    seen = {}

    def spy(model, split, ctx, opts):
        seen["opts"] = opts
        return model

    schema = options_type("influence")
    monkeypatch.setitem(METHODS._items, "influence", spy)
    ctx = UnlearnContext(cfg.model.train, "cpu", 0, lambda: None)
    run_method("influence", object(), split, ctx, schema())
    assert seen["opts"].scale == targets_defaults(schema)["scale"]["samples"]


def test_the_log_names_the_chosen_defaults_and_warns_when_unsuited(make_cfg, caplog, monkeypatch):
    cfg = make_cfg(*TINY, "method=influence", "forget_fraction=0.1")
    typed = validate_config(cfg)
    schema = type(typed.method)
    monkeypatch.setattr(schema, "unsuited", {"samples": "worse than doing nothing"})
    with caplog.at_level(logging.INFO):
        log_method_defaults(cfg.method, typed.method, "samples")
    text = caplog.text
    assert "influence defaults for forgetting samples: scale=7.0" in text
    assert "influence is not suited to forgetting samples: worse than doing nothing" in text
    caplog.clear()
    explicit = dataclasses.replace(typed.method, scale=2.0)
    with caplog.at_level(logging.INFO):
        log_method_defaults({**cfg.method, "scale": 2.0}, explicit, "class")
    assert "defaults for forgetting" not in caplog.text and "not suited" not in caplog.text
