"""Shared fixtures: configs composed from the real YAML files, with tiny data and a temp cache."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from PIL import Image

import unlearn_cli.cli  # noqa: F401  (registers the forget_tag resolver used by the configs)

# Tiny synthetic data and a narrow CNN: a whole experiment takes well under a second. The noise
# floor's second retrain is off here (tests/test_trust.py runs it), and so are the run's plots
# (seconds of matplotlib per run; tests/test_cli.py checks them) and the representation probes
# (scikit-learn fits per model; tests/test_representation.py runs them).
TINY = [
    "dataset=synthetic",
    "model.width=8",
    "model.train.epochs=10",
    "model.train.batch_size=32",
    "device=cpu",
    "evaluation.noise_floor=false",
    "evaluation.plots=false",
    "evaluation.representation=false",
]


def pytest_configure(config):
    """Under `pytest -n N` (make test) each worker gets its share of the cores: `threads: auto`
    follows OMP_NUM_THREADS, so N workers do not oversubscribe the CPU (on 2 cores, 2 workers
    of 2 threads each ran the suite slower than 1 worker did)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        from unlearn_cli.device import available_cores

        share = max(1, available_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


def pytest_collection_modifyitems(items):
    """The `slow` tests (seconds to a minute each: processes, launchers, real servers) first.
    pytest-xdist's worksteal gives each worker a contiguous half of this list and an idle worker
    takes the end of the other's queue: with the long tests up front, the last tests of the run
    are short ones and neither core idles while the other finishes a long test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept


@pytest.fixture
def make_cfg(tmp_path: Path):
    def make(*overrides: str):
        with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
            return compose("config", overrides=[f"cache_dir={tmp_path / 'cache'}", *overrides])

    return make


def unlearn_executable() -> str:
    """The installed console script next to this interpreter (the venv's `unlearn`)."""
    script = Path(sys.executable).with_name("unlearn")
    return str(script) if script.exists() else shutil.which("unlearn") or "unlearn"


@pytest.fixture
def run_cli(unlearn_here):
    """`unlearn ARGS` inside tmp_path, in-process (a subprocess costs seconds of imports): the
    same exit code, stdout and stderr as the script gives. An exception the CLI lets escape
    fails the test with its traceback."""

    def run(*args: str, check: bool = False) -> subprocess.CompletedProcess:
        code, out, err = unlearn_here(*args)
        if check and code != 0:
            raise AssertionError(f"unlearn {' '.join(args)} failed:\n{out}\n{err}")
        return subprocess.CompletedProcess(["unlearn", *args], code, out, err)

    return run


def retrain_inputs(cfg, data, split):
    """Every input batch the retrain method feeds its model, stacked as rows; and its context."""
    import torch

    from unlearn_cli.methods import UnlearnContext, run_method
    from unlearn_cli.models import build_model

    seen: list = []

    def fresh():
        model = build_model(cfg.model, data.input_shape, data.num_classes, seed=0)
        model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
        return model

    ctx = UnlearnContext(cfg.model.train, torch.device("cpu"), 0, fresh)
    run_method("retrain", fresh(), split, ctx)
    return torch.cat(seen).flatten(1), ctx


def min_distance(a, b):
    """Smallest exact Euclidean distance from each row of `a` to the rows of `b`."""
    import torch

    return torch.cdist(a.flatten(1), b, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)[0]


COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "elephant": (40, 40, 200)}


def write_image_folder(root, per_class=15, broken=True, split=False):
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        for i in range(per_class):
            sub = root / (("train" if i < per_class - 3 else "test") if split else "") / name
            sub.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (12, 12, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8), "RGB").save(sub / f"{name}{i}.png")
    if broken:
        (root / "cat" / "broken.png").write_bytes(b"not a png at all")
    return root


@pytest.fixture
def make_folder():
    """Writes root/<cat|dog|elephant>/<name><i>.png (tiny coloured noise), plus one broken file."""
    return write_image_folder


@pytest.fixture
def unlearn_here(tmp_path, monkeypatch, capfd):
    """Run `unlearn ARGS` in-process inside tmp_path: (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["unlearn"])

    def run(*args: str) -> tuple[int, str, str]:
        capfd.readouterr()
        sigterm = signal.getsignal(signal.SIGTERM)  # main() turns SIGTERM into Ctrl-C
        try:
            code = unlearn_cli.cli.main(list(args))
        except SystemExit as exc:
            code = exc.code
        finally:
            signal.signal(signal.SIGTERM, sigterm)
        out, err = capfd.readouterr()
        return code, out, err

    return run
