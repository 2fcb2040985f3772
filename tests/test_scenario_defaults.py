"""Per-scenario method defaults: `auto` becomes the class or the samples default of a field,
chosen by what the run forgets; explicit values win; unsuited methods say so in the log."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import torch.nn.functional as F

from unlearn_cli.data import load_dataset
from unlearn_cli.data.spec import split_from_config
from unlearn_cli.methods import METHODS, UnlearnContext, options_type, run_method
from unlearn_cli.methods.base import (
    MEMORISED_GAP,
    log_method_defaults,
    memorised_options,
    note_memorised_original,
)
from unlearn_cli.options import (
    TARGETS,
    accepts,
    hints_of,
    memorised_defaults,
    targets_defaults,
)
from unlearn_cli.registry import Choice
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
    assert (
        typed.method.options.scale == targets_defaults(type(typed.method.options))["scale"][targets]
    )


def test_an_explicit_value_applies_to_both_scenarios(make_cfg):
    for forget in ("forget_class=1", "forget_fraction=0.1"):
        typed = validate_config(make_cfg(*TINY, "method=influence", "method.scale=2.5", forget))
        assert typed.method.options.scale == 2.5


def test_a_forget_list_uses_the_samples_defaults(make_cfg, tmp_path):
    ids = tmp_path / "request.txt"
    ids.write_text("0\n1\n2\n")
    typed = validate_config(make_cfg(*TINY, "method=adversarial", f"forget_indices_file={ids}"))
    assert typed.run.targets == "samples" and typed.method.options.reference == "heldout"


def test_run_method_resolves_auto_for_direct_callers(make_cfg, monkeypatch):
    """A caller that passes the schema's defaults (`auto` in them) gets the split's values."""
    cfg = make_cfg(*TINY, "forget_fraction=0.2")
    split = split_from_config(
        load_dataset(validate_config(cfg).dataset, cfg.cache_dir), validate_config(cfg)
    )
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
    schema = type(typed.method.options)
    monkeypatch.setattr(schema, "unsuited", {"samples": "worse than doing nothing"})
    with caplog.at_level(logging.INFO):
        log_method_defaults(typed.method, "samples")
    text = caplog.text
    assert "influence defaults for forgetting samples: scale=9.0" in text
    assert "influence is not suited to forgetting samples: worse than doing nothing" in text
    caplog.clear()
    explicit = dataclasses.replace(typed.method.options, scale=2.0)
    with caplog.at_level(logging.INFO):
        log_method_defaults(Choice("influence", explicit, as_written=explicit), "class")
    assert "defaults for forgetting" not in caplog.text and "not suited" not in caplog.text


class Memoriser(torch.nn.Module):
    """Knows the label of every training image by heart and answers class 0 for any other:
    100% training accuracy, chance on the validation split."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.keys = {
            tuple(row.flatten().tolist()): int(label) for row, label in zip(x, y, strict=True)
        }
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = [self.keys.get(tuple(row.flatten().tolist()), 0) for row in x]
        return F.one_hot(torch.tensor(labels), self.num_classes).float()


def test_a_memorising_original_is_detected_and_its_unsuited_methods_warn(
    make_cfg, caplog, monkeypatch
):
    cfg = make_cfg(*TINY, "method=finetune", "forget_fraction=0.1")
    split = split_from_config(
        load_dataset(validate_config(cfg).dataset, cfg.cache_dir), validate_config(cfg)
    )
    data, opts = split.data, validate_config(cfg).method.options
    rows = torch.as_tensor(split.trainable_idx)
    memoriser = Memoriser(data.x_train[rows], data.y_train[rows], data.num_classes)
    monkeypatch.setattr(type(opts), "unsuited_memorising", "it only fine-tunes on retain data")
    with caplog.at_level(logging.WARNING):
        seen = note_memorised_original("finetune", opts, memoriser, split, "cpu", 64)
    assert seen["original_memorises"] and seen["original_train_acc"] == 100.0
    assert seen["original_validation_acc"] < 100.0 - MEMORISED_GAP
    assert "finetune's samples defaults do not forget on such a model: it only fine-tunes" in (
        caplog.text
    )
    caplog.clear()
    # A model that fits its training data no better than held-out data is not memorising.
    constant = torch.nn.Linear(data.x_train[0].numel(), data.num_classes)
    flat = torch.nn.Sequential(torch.nn.Flatten(), constant)
    with caplog.at_level(logging.WARNING):
        seen = note_memorised_original("finetune", opts, flat, split, "cpu", 64)
    assert not seen["original_memorises"] and "memorises" not in caplog.text
    # Class forgetting: the samples note does not apply.
    cls = make_cfg(*TINY, "method=finetune", "forget_class=1")
    class_split = split_from_config(
        load_dataset(validate_config(cls).dataset, cls.cache_dir), validate_config(cls)
    )
    assert note_memorised_original("finetune", opts, memoriser, class_split, "cpu", 64) == {}


def test_a_memorising_original_takes_the_memorised_defaults_where_auto(make_cfg, caplog):
    schema = options_type("influence")
    assert memorised_defaults(schema) == {"scale": "search"}
    assert schema().for_targets("samples", memorised=True).scale == "search"
    assert schema().for_targets("samples").scale == targets_defaults(schema)["scale"]["samples"]
    assert schema().for_targets("class", memorised=True).scale == 1.0  # samples only
    cfg = make_cfg(*TINY, "method=influence", "forget_fraction=0.1")
    method = validate_config(cfg).method
    opts = method.options
    with caplog.at_level(logging.INFO):
        resolved = memorised_options(method)
    assert resolved.scale == "search" and resolved.gradient == opts.gradient
    assert "from an original that memorises: scale=search" in caplog.text
    explicit = make_cfg(*TINY, "method=influence", "method.scale=3.0", "forget_fraction=0.1")
    method = validate_config(explicit).method
    assert memorised_options(method) is method.options  # an explicit value wins


def test_the_memorising_run_records_the_options_it_ran_with(make_cfg, tmp_path, monkeypatch):
    """metrics.json's method options (what `unlearn report` keys rows by) are the ones the
    method ran with, not the samples defaults it was validated with."""
    from unlearn_cli import run as run_module
    from unlearn_cli import run_models

    monkeypatch.setattr(run_models, "note_memorised_original",
                        lambda *a, **k: {"original_memorises": True})  # fmt: skip
    cfg = make_cfg(*TINY, "method=influence", "forget_fraction=0.1", "evaluation.plots=false")
    record = run_module.run_experiment(validate_config(cfg), tmp_path / "run")
    assert record["config"]["method_options"]["scale"] == "search"
    assert "searched_scale" in record["method_metrics"]


MEMORISED = [(m, k) for m in METHODS.names() for k in memorised_defaults(options_type(m))]


@pytest.mark.parametrize(("method", "key"), MEMORISED, ids=lambda v: str(v))
def test_memorised_defaults_are_valid_values(method, key):
    schema = options_type(method)
    value = memorised_defaults(schema)[key]
    assert accepts(hints_of(schema)[key], value, "method", key)[0]
    resolved = schema().for_targets("samples", memorised=True)
    assert getattr(resolved, key) == value
    resolved.check("method")
