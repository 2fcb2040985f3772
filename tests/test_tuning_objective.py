"""The tuning objective `val_gap` is blind to the test set (issue 33): permuting the test labels
moves the reported avg_gap (TA and MIA read them) and leaves val_gap exactly where it was."""

from __future__ import annotations

import dataclasses

import torch

from unlearn_cli.data import load_dataset
from unlearn_cli.data.spec import split_from_config
from unlearn_cli.evaluation.evaluate import evaluate_models
from unlearn_cli.run import build_models, seed_everything
from unlearn_cli.validate import validate_config

from .conftest import TINY


def with_permuted_test_labels(split):
    data = split.data
    permuted = data.y_test[
        torch.randperm(len(data.y_test), generator=torch.Generator().manual_seed(1))
    ]
    return dataclasses.replace(split, data=dataclasses.replace(data, y_test=permuted))


def test_permuting_the_test_labels_leaves_val_gap_unchanged(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "method=finetune", "forget_fraction=0.2")
    typed = validate_config(cfg)
    seed_everything(cfg.seed)
    data = load_dataset(validate_config(cfg).dataset, cfg.cache_dir)
    split = split_from_config(data, validate_config(cfg))
    built = build_models(typed, split, torch.device("cpu"))
    figures = {}
    for name, view in (("as is", split), ("permuted", with_permuted_test_labels(split))):
        rows, _, _ = evaluate_models(built.models, built.seconds, view, torch.device("cpu"),
                                     typed.evaluation.options, cfg.seed, built.counts)  # fmt: skip
        figures[name] = rows
    for role in ("original", "unlearned"):
        before, after = figures["as is"][role], figures["permuted"][role]
        assert after["val_gap"] == before["val_gap"]
        assert after["TA"] != before["TA"]  # the permutation did reach what avg_gap reads
    assert any(figures["permuted"][r]["avg_gap"] != figures["as is"][r]["avg_gap"]
               for r in ("original", "unlearned"))  # fmt: skip
    assert figures["as is"]["retrain"]["val_gap"] == 0.0


def test_val_gap_is_the_mean_gap_over_ua_ra_and_the_validation_figures():
    from unlearn_cli.evaluation.catalogue import gap_figures, val_gap_of

    retrain = {"UA": 10.0, "RA": 99.0, "TA": 90.0, "MIA": 30.0, "val_acc": 91.0, "val_MIA": 25.0}
    other = {"UA": 4.0, "RA": 97.0, "TA": 80.0, "MIA": 10.0, "val_acc": 87.0, "val_MIA": 35.0}
    assert val_gap_of(other, retrain) == (6 + 2 + 4 + 10) / 4
    assert gap_figures(other, retrain)["avg_gap"] == (6 + 2 + 10 + 20) / 4
