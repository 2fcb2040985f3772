"""Raw config stays at the edge; a job's options are validated once.

Hydra hands over a composed `DictConfig`; `validate_config` turns it into the job's one typed
`RunConfig`, and everything after takes that. Only these modules may import `DictConfig` /
`OmegaConf` (docs/development.md, "Where raw config is allowed", says the same):

- `cli.py`: the Hydra job entry. It receives the composed config, turns it into the job's
  `RunConfig` (or reuses the pre-checks' one), and writes the plain summary a job whose config
  does not validate leaves in its metrics.json.
- `overrides.py`: the pre-checks of command-line overrides compose configs with Hydra before it
  creates a folder ("did you mean", unknown keys, every value of a sweep).
- `resolvers.py`: registers the OmegaConf resolvers the YAML files use (`${forget_tag:...}`).
- `options.py`: the parser itself; `parse` turns a raw node (DictConfig or plain dict) into a
  schema instance.
- `evaluation/sweep.py`: Hydra's callback API hands its hooks a `DictConfig`.
"""

from __future__ import annotations

import ast

import pytest

from .conftest import TINY
from .test_import_cycles import package_modules

EDGE = {
    "unlearn_cli.cli",
    "unlearn_cli.overrides",
    "unlearn_cli.resolvers",
    "unlearn_cli.options",
    "unlearn_cli.evaluation.sweep",
}
RAW = {"DictConfig", "OmegaConf", "ListConfig", "open_dict"}


def raw_config_imports(tree: ast.AST) -> set[str]:
    """The omegaconf names (or the module itself) a module imports, at any depth."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("omegaconf"):
            found |= {a.name for a in node.names} & RAW or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("omegaconf")}
    return found


def test_only_the_edge_modules_import_raw_config():
    offenders = {}
    for name, path in package_modules().items():
        found = raw_config_imports(ast.parse(path.read_text(), str(path)))
        if found and name not in EDGE:
            offenders[name] = sorted(found)
    assert not offenders, f"raw config imported outside the edge modules: {offenders}"


def test_the_edge_list_names_modules_that_exist():
    assert set(package_modules()) >= EDGE


@pytest.fixture
def count_validations(monkeypatch):
    """Count `validate_config` calls, wherever they are made from."""
    import unlearn_cli.validate as validate

    calls = []
    real = validate.validate_config

    def counted(cfg):
        calls.append(cfg)
        return real(cfg)

    monkeypatch.setattr(validate, "validate_config", counted)
    return calls


def test_a_run_validates_its_options_once(run_cli, tmp_path, count_validations):
    run_cli("run", *TINY, "method=finetune", f"hydra.run.dir={tmp_path / 'run'}", check=True)
    assert len(count_validations) == 1
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_each_sweep_job_is_validated_once(run_cli, tmp_path, count_validations):
    """The pre-checks validate the first job (its config is reused by that job) and compose
    the other values; each later job validates its own config once."""
    run_cli("run", "-m", *TINY, "method=finetune", "seed=0,1",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", check=True)  # fmt: skip
    first_job, other_sweep_values, second_job = 1, 1, 1
    assert len(count_validations) == first_job + other_sweep_values + second_job


def test_an_audit_validates_its_options_once(run_cli, tmp_path, count_validations):
    run_cli("audit", "--methods", "finetune,negative_gradient", "--models", "2", *TINY,
            "model.train.epochs=2", check=True)  # fmt: skip
    assert len(count_validations) == 1
