"""No code path can run code from a file it loads: a scan of the package's own source.

Behavioural proofs live beside the loaders (a malicious Animal-MNIST or CIFAR pickle does not
run: test_animal_mnist.py, test_public_datasets.py; damaged checkpoints are refused:
test_bad_inputs.py). This scan keeps a later change from adding an unsafe load.
"""

from __future__ import annotations

import ast
from pathlib import Path

import unlearn_cli

SOURCES = sorted(Path(unlearn_cli.__file__).parent.rglob("*.py"))


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def keyword(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name:
            return ast.unparse(kw.value)
    return None


def test_the_scan_sees_the_package():
    assert len(SOURCES) > 40


def test_no_unsafe_deserialisation_anywhere():
    problems = []
    for path in SOURCES:
        for node, name in calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.name}:{node.lineno} {name}"
            if name == "torch.load" and keyword(node, "weights_only") != "True":
                problems.append(f"{where} without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "joblib.load"):
                problems.append(f"{where}: plain unpickling")
            if name in ("np.load", "numpy.load") and keyword(node, "allow_pickle") == "True":
                problems.append(f"{where} with allow_pickle=True")
            if name in ("eval", "exec"):
                problems.append(where)
    assert problems == []


def test_the_only_unpickler_admits_numpy_arrays_alone():
    """Every pickle read goes through NumpyOnlyUnpickler (a subclass with find_class)."""
    users = [p.name for p in SOURCES if "Unpickler" in p.read_text()]
    assert sorted(users) == ["animal_mnist.py", "public.py"]
    from unlearn_cli.data.animal_mnist import NumpyOnlyUnpickler

    assert "find_class" in NumpyOnlyUnpickler.__dict__
