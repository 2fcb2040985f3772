"""Every option of every schema: YAML and schema agree, and a wrong value of each field stops
the run with one line naming its key, before any data is loaded or model trained."""

from __future__ import annotations

import os
import time
import typing
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from unlearn_cli.data import DATASETS
from unlearn_cli.errors import UserError
from unlearn_cli.evaluation.options import EvaluationOptions
from unlearn_cli.methods import METHODS, options_type
from unlearn_cli.models.builders import model_options_type
from unlearn_cli.options import Options, accepts, defaults_of, fields_of, hints_of, range_of
from unlearn_cli.overrides import group_options
from unlearn_cli.stream.spec import StreamOptions
from unlearn_cli.validate import RunOptions, validate_config

from .conftest import TINY

# One composed config per schema: (overrides, the node's dotted path, its schema).
DATASET_EXTRA = {"imagefolder": ["dataset.root=."]}


def schema_cases() -> list[tuple[list[str], str, type]]:
    cases = [
        ([], "", RunOptions),
        (["evaluation=lira"], "evaluation", EvaluationOptions),
        ([], "stream", StreamOptions),
    ]
    cases += [([f"method={m}"], "method", options_type(m)) for m in METHODS.names()]
    cases += [([f"model={m}"], "model", model_options_type(m)) for m in group_options("model")]
    for name in group_options("dataset"):
        if name == "tabular":
            continue  # its tables are covered by name below
        cases.append(([f"dataset={name}", *DATASET_EXTRA.get(name, [])], "dataset",
                      DATASETS.options[name]))  # fmt: skip
    cases.append((["dataset=tabular", "dataset.name=csv", "dataset.path=t.csv"], "dataset",
                  DATASETS.options["csv"]))  # fmt: skip
    cases.append((["dataset=tabular"], "dataset", DATASETS.options["breast_cancer"]))
    return cases


CASES = schema_cases()


def case_id(case) -> str:
    return " ".join(case[0]) or "top-level"


def leaf_fields(schema: type, prefix: str):
    """(dotted key, type hint) of every field, nested schemas walked into."""
    hints = hints_of(schema)
    for f in fields_of(schema):
        hint = hints[f.name]
        # A list of schemas (a stream's steps) is one value: a wrong one is refused as a whole.
        listed = typing.get_origin(hint) is list
        nested = [] if listed else [a for a in typing.get_args(hint) or (hint,) if is_schema(a)]
        key = f"{prefix}.{f.name}" if prefix else f.name
        if nested:
            yield from leaf_fields(nested[0], key)
        else:
            yield key, hint


# Values a person really mistypes; each field is fed those its type rejects.
WRONG_VALUES = ["bogus", "ten", 2.5, -7, True, {"a": 1}, [1, "x"]]


def rejected_values(hint) -> list:
    """Two values of a wrong type (or unknown choices), and the values just outside its range."""
    wrong = [v for v in WRONG_VALUES if not accepts(hint, v, "", "k")[0]][:2]
    bounds = range_of(hint)
    if bounds is not None:  # just outside the range
        for edge, step in ((bounds.ge, -1), (bounds.gt, 0), (bounds.le, 1), (bounds.lt, 0)):
            if edge is not None:
                wrong.append(edge + step)
    return wrong


class Composed(dict):
    """(the YAML files' own values, the same made runnable here) of each case, composed the
    first time a test asks for it: a worker composes only the cases it runs, and once."""

    def __init__(self, cache: Path):
        super().__init__()
        self.cache = cache

    def __missing__(self, key: str):
        from hydra import compose, initialize_config_module

        overrides = next(o for o, _, _ in CASES if case_id((o,)) == key)
        with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
            yaml = compose("config", overrides=overrides)
        runnable = OmegaConf.merge(yaml, {"device": "cpu", "cache_dir": str(self.cache)})
        self[key] = (yaml, runnable)
        return self[key]


@pytest.fixture(scope="session")
def composed(tmp_path_factory):
    """Session-scoped: pytest-xdist's worksteal can hand a worker this module's tests in several
    stretches, and a module-scoped fixture is set up again for each (three times, 7 s each)."""
    return Composed(tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_yaml_and_schema_agree(composed, case):
    overrides, path, schema = case
    cfg = composed[case_id(case)][0]
    node = OmegaConf.select(cfg, path) if path else cfg
    yaml = OmegaConf.to_container(node, resolve=False)
    yaml.pop("name", None)
    for key in ("dataset", "model", "method", "evaluation", "stream") if not path else ():
        yaml.pop(key)
    defaults = defaults_of(schema)
    set_in_test = {o.split("=")[0].removeprefix(f"{path}.") for o in overrides}
    for key in set(defaults) | set(yaml):
        if key in set_in_test:
            continue
        assert key in defaults, f"{path}.{key} is in the YAML but not in {schema.__name__}"
        if key not in yaml:  # only optional nested settings may be left out of a YAML
            assert defaults[key] is None, f"{path}.{key} is missing from the YAML"
            continue
        expected = defaults[key]
        nested = nested_schema(hints_of(schema)[key])
        if expected is None and nested is not None and isinstance(yaml[key], dict):
            expected = defaults_of(nested)  # an optional settings block, given in this YAML
        assert yaml[key] == expected, f"{path}.{key}: YAML {yaml[key]!r} != schema {expected!r}"


def nested_schema(hint):
    return next((a for a in typing.get_args(hint) if is_schema(a)), None)


def is_schema(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, Options)


def every_field():
    for case in CASES:
        for key, hint in leaf_fields(case[2], case[1]):
            for value in rejected_values(hint):
                yield pytest.param(case, key, value, id=f"{case_id(case)}:{key}={value!r}")


@pytest.mark.parametrize(("case", "key", "value"), list(every_field()))
def test_every_wrong_value_is_one_line_naming_its_key(composed, case, key, value):
    cfg = composed[case_id(case)][1].copy()
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, merge=False)
    with pytest.raises(UserError) as caught:
        validate_config(cfg)
    message = str(caught.value)
    assert key in message and "\n" not in message, message


def test_every_field_is_walked():
    """The generated cases reach every field, and each field has at least one wrong value."""
    total = 0
    for case in CASES:
        for key, hint in leaf_fields(case[2], case[1]):
            assert rejected_values(hint), f"{key}: no wrong value to try"
            total += 1
    assert total > 150


def test_every_schema_field_has_help_text():
    for _, path, schema in CASES:
        for f in fields_of(schema):
            assert f.metadata.get("help"), f"{path}.{f.name} has no help text"


# Through the real command line: exit 2, one line, no traceback, nothing written, no training.
CLI_CASES = [
    ("method=sisa", "method.shards=0"),
    ("evaluation.mia_max_per_side=-1",),
    ("method=influence", "method.solver=last_layr"),
    ("method=adversarial", "method.retain_loss=mse"),
    ("method=adversarial", "method.reference=bogus"),
    ("method=finetune", "method.optimizer=lbfgs"),
    ("method=salun", "method.saliency=1.5"),
    ("method=ssd", "method.select_threshold=-1"),
    ("method=ssd", "method.alpha=3"),
    ("model.train.compile=[1]",),
    ("dataset=imagefolder",),
    ("cache_dir=/proc/no/such/place",),
    ("hydra.run.dir=/proc/no/such/place",),
]


@pytest.mark.parametrize("args", CLI_CASES, ids=" ".join)
def test_cli_stops_before_any_work(unlearn_here, tmp_path, args):
    start = time.perf_counter()
    code, out, err = unlearn_here("run", *TINY, *args)
    elapsed = time.perf_counter() - start
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("unlearn: error: "), err
    key = next((a.split("=")[0] for a in reversed(args) if "=" in a and "/" not in a), "")
    if key != "dataset":
        assert key in lines[0], lines[0]
    assert "training" not in out + err
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.json"))
    assert elapsed < 5, f"took {elapsed:.1f}s: work started before the check"


def test_registered_methods_have_schema_yaml_docstring_and_bench():
    import importlib

    from hydra import compose, initialize_config_module

    yamls = set(group_options("method"))
    assert set(METHODS.names()) == yamls  # every method has a YAML and every YAML a method
    for name in METHODS.names():
        assert issubclass(options_type(name), Options)
        module = importlib.import_module(f"unlearn_cli.methods.{name}")
        assert module.__doc__ and name in module.__doc__
    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        cfg = compose("config", overrides=["sweep=bench"], return_hydra_config=True)
    # the sweeper receives its params resolved: the registry's names
    assert cfg.hydra.sweeper.params.method.split(",") == METHODS.names()


TOY_METHOD = '''"""toy_scale: multiply every weight by `factor` (a test fixture, no real method)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_cli.methods.base import METHODS
from unlearn_cli.options import Options, Positive, opt


@dataclass(frozen=True)
class ToyScaleOptions(Options):
    factor: Positive = opt(0.5, "what every weight is multiplied by")


@METHODS.register("toy_scale")
def toy_scale(model, split, ctx, opts: ToyScaleOptions):
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(opts.factor)
    ctx.metrics["factor"] = opts.factor
    return model.eval()
'''


@pytest.fixture
def toy_method(tmp_path):
    """A copy of the package with a new method added as its module and its YAML only: the
    subprocess imports the copy (PYTHONPATH), so the checkout itself is never edited and tests
    running beside this one (pytest -n) never see the toy method."""
    import shutil

    repo = Path(__file__).resolve().parents[1]
    package = tmp_path / "pkg" / "unlearn_cli"
    skip = shutil.ignore_patterns("__pycache__", "configs")  # configs: copied from the repo's top
    shutil.copytree(repo / "unlearn_cli", package, ignore=skip)
    shutil.copytree(
        repo / "configs", package / "configs", ignore=shutil.ignore_patterns("__pycache__")
    )
    (package / "methods" / "toy_scale.py").write_text(TOY_METHOD)
    (package / "configs" / "method" / "toy_scale.yaml").write_text(
        "# a test fixture\nname: toy_scale\nfactor: 0.5\n"
    )
    return package.parent


# One fresh process (the package discovers its methods at import) runs all the checks.
NEW_METHOD_CHECKS = """
import contextlib, io, json, sys
import unlearn_cli.cli as cli
import unlearn_cli.resolvers as resolvers

def unlearn(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # Hydra's --help exits
            code = exc.code
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}

tiny = sys.argv[1:]
print(json.dumps({
    "help": unlearn("run", "--help"),
    "run": unlearn("run", *tiny, "model.train.epochs=2", "method=toy_scale", "method.factor=0.9",
                   "evaluation.plots=false"),
    "bad": unlearn("run", *tiny, "method=toy_scale", "method.factor=-1"),
    "bench": resolvers.registered_methods().split(","),
    "file": cli.__file__,
}))
"""


@pytest.mark.slow
def test_a_new_method_is_its_module_and_yaml(toy_method, tmp_path):
    """Help, a run with a checked option, and the benchmark pick it up without other edits."""
    import json
    import subprocess
    import sys

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(toy_method), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run([sys.executable, "-c", NEW_METHOD_CHECKS, *TINY], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["help"]["code"] == 0 and "toy_scale" in seen["help"]["out"]
    assert seen["run"]["code"] == 0, seen["run"]["err"]
    metrics = json.loads(next((tmp_path / "outputs" / "runs").glob("*/metrics.json")).read_text())
    assert metrics["config"]["method"] == "toy_scale" and metrics["method_metrics"]["factor"] == 0.9
    assert seen["bad"]["code"] == 2 and "method.factor must be a number > 0" in seen["bad"]["err"]
    assert "toy_scale" in seen["bench"]
    assert seen["file"].startswith(str(toy_method))  # the copy ran, not the checkout


def test_method_option_tables_are_current():
    from unlearn_cli.docs import BEGIN, END, options_markdown

    page = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text(encoding="utf-8")
    current = BEGIN + page.split(BEGIN, 1)[1].split(END, 1)[0] + END
    assert current == options_markdown(), "run: python -m unlearn_cli.docs docs/methods.md"


def test_a_bad_value_anywhere_in_a_sweep_stops_it_before_the_first_job(unlearn_here, tmp_path):
    code, _, err = unlearn_here("run", "-m", *TINY, "method=sisa", "method.shards=2,0")
    assert code == 2 and "method.shards must be a whole number >= 1, got 0" in err
    assert not (tmp_path / "outputs" / "sweeps").exists()
    code, _, err = unlearn_here("run", "-m", *TINY, "method=retrain,ssd", "method.alpha=3")
    assert code == 2 and "unknown option" in err and "Traceback" not in err
