"""Every config file composes, validates and builds what it names."""

from __future__ import annotations

import time
from copy import deepcopy
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from unlearn_cli.audit import audit_dir
from unlearn_cli.data import DATASETS
from unlearn_cli.methods import METHODS
from unlearn_cli.models import MODELS, build_model
from unlearn_cli.overrides import CONFIG_GROUPS, group_options
from unlearn_cli.validate import validate_config

from .conftest import TINY

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REGISTRIES = {"dataset": DATASETS, "model": MODELS, "method": METHODS}


def all_options():
    return [(g, o) for g in CONFIG_GROUPS for o in group_options(g)]


def test_packaged_configs_match_the_repo():
    """The installed package ships exactly the YAML files of configs/ (wheel and editable)."""
    packaged = files("unlearn_cli.configs")
    for yaml_file in REPO_CONFIGS.rglob("*.yaml"):
        rel = yaml_file.relative_to(REPO_CONFIGS)
        assert packaged.joinpath(*rel.parts).read_text() == yaml_file.read_text()


def test_defaults(make_cfg):
    cfg = make_cfg()
    assert cfg.dataset.name == "animal_mnist"
    assert cfg.model.name == "cnn"
    assert cfg.method.name == "influence"  # a first run shows unlearning, not retrain vs itself
    assert cfg.evaluation.name == "default" and cfg.evaluation.noise_floor
    assert cfg.forget_class is None and cfg.forget_fraction is None
    assert cfg.device == "auto"
    assert cfg.dataset.default_forget_class == "elephant"


@pytest.mark.parametrize(("group", "option"), all_options())
def test_every_option_composes_and_validates(make_cfg, group, option):
    # imagefolder needs its required root (any folder: validation does not read it)
    extra = ["dataset.root=."] if option == "imagefolder" else []
    cfg = make_cfg(f"{group}={option}", *extra)
    # Name things once: the file name is the `name` key and the registry key (the tabular
    # group's `name` instead picks its table, each table a registry key of its own).
    assert cfg[group].name == option or (option == "tabular" and cfg[group].name in DATASETS)
    if group in REGISTRIES:
        assert cfg[group].name in REGISTRIES[group]
    validate_config(cfg)


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g in ("experiment", "variant", "sweep") for o in group_options(g)],
)
def test_presets_compose(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}")
    validate_config(cfg)
    if option == "classwise":
        assert cfg.forget_class == "elephant" and cfg.forget_fraction is None
    if option == "random10":
        assert cfg.forget_fraction == 0.1 and cfg.forget_class is None
    if option.startswith("tune_"):  # tune_<method> or tune_<method>_<what it tunes>
        rest = option.removeprefix("tune_")
        named = [m for m in group_options("method") if rest == m or rest.startswith(m + "_")]
        assert named, f"{option} names no method"
        assert cfg.method.name == max(named, key=len)


@pytest.mark.parametrize("option", group_options("model"))
def test_every_model_builds_and_classifies(make_cfg, option):
    cfg = make_cfg(f"model={option}")
    model = build_model(cfg.model, (1, 8, 8), 4, seed=0)
    out = model.eval()(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 4)
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 4


def test_same_seed_same_initial_weights(make_cfg):
    cfg = make_cfg(*TINY)
    a = build_model(cfg.model, (1, 8, 8), 4, seed=3).state_dict()
    b = build_model(cfg.model, (1, 8, 8), 4, seed=3).state_dict()
    c = build_model(cfg.model, (1, 8, 8), 4, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_struct_mode_rejects_unknown_keys(make_cfg):
    with pytest.raises(Exception, match="forget_clas"):
        make_cfg("forget_clas=cat")


def sweep_dirs(*overrides: str, starts: int = 2) -> list[str]:
    """The sweep folders Hydra would create for multiruns started a millisecond apart: copies
    of one composed config, each without the `${now:}` values resolved (and cached) so far."""
    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    dirs = []
    for _ in range(starts):
        started = deepcopy(cfg)
        OmegaConf.clear_cache(started)
        dirs.append(str(started.hydra.sweep.dir))
        time.sleep(0.001)
    return dirs


@pytest.mark.parametrize("sweep", [None, *group_options("sweep")])
def test_sweeps_started_in_the_same_second_get_their_own_folders(sweep):
    """Two `unlearn run -m` of one preset started within a second (say, a tuning sweep's two
    halves in two terminals) must not write their jobs into one folder: the `${now:}` in every
    sweep dir goes down to the microsecond."""
    overrides = [] if sweep is None else [f"sweep={sweep}"]
    first, second = sweep_dirs(*overrides)
    assert first != second
    assert first.split("/")[:-1] == second.split("/")[:-1]  # the same root, another folder


def test_audits_started_in_the_same_second_get_their_own_folders():
    assert audit_dir("random0.1") != audit_dir("random0.1")
