"""A wheel install (not editable) carries the configs (pyproject's package-dir mapping) and runs
`unlearn run`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TINY

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_runs_from_its_own_configs(tmp_path):
    dist, target, work = tmp_path / "dist", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", dist, REPO], check=True)
    (wheel,) = dist.glob("unlearn_cli-*.whl")
    subprocess.run([*pip, "install", "-q", "--no-deps", "--target", target, wheel], check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import unlearn_cli; print(unlearn_cli.__file__)"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(target))  # the wheel's copy, not the checkout
    assert (target / "unlearn_cli" / "configs" / "method" / "retrain.yaml").is_file()
    # Every subpackage ships (pyproject lists them; one left out imports only from a checkout).
    for package in (REPO / "unlearn_cli").glob("*/__init__.py"):
        assert (target / "unlearn_cli" / package.parent.name / "__init__.py").is_file(), package
    for group in (REPO / "configs").iterdir():
        if group.is_dir() and not group.name.startswith("__"):
            assert any((target / "unlearn_cli" / "configs" / group.name).rglob("*.yaml")), group
    proc = subprocess.run(
        [str(target / "bin" / "unlearn"), "run", *TINY, "method=retrain"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = (work / "outputs" / "runs").iterdir()
    assert (run / "metrics.json").is_file() and (
        run / "checkpoints" / "unlearned.safetensors"
    ).is_file()
