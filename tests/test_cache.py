"""The model cache: miss then hit, keys that separate configs, damaged entries retrained, and
concurrent processes that need the same model (one trains, the others wait)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from unlearn_cli.cache import ModelCache


def factory():
    calls = {"make": 0}

    def fresh() -> nn.Module:
        return nn.Linear(3, 2)

    def make(staging=None) -> nn.Module:
        calls["make"] += 1
        model = fresh()
        with torch.no_grad():
            model.weight.fill_(float(calls["make"]))
        return model

    return fresh, make, calls


def test_miss_then_hit(tmp_path):
    cache = ModelCache(tmp_path)
    fresh, make, calls = factory()
    first = cache.get_or_train("original", {"seed": 0}, fresh, make)
    second = cache.get_or_train("original", {"seed": 0}, fresh, make)
    assert not first.hit and second.hit and calls["make"] == 1
    assert torch.equal(first.model.weight, second.model.weight)
    assert second.train_seconds == first.train_seconds >= 0


def test_different_parts_are_different_entries(tmp_path):
    cache = ModelCache(tmp_path)
    fresh, make, calls = factory()
    cache.get_or_train("original", {"seed": 0}, fresh, make)
    cache.get_or_train("original", {"seed": 1}, fresh, make)
    cache.get_or_train("retrain", {"seed": 0}, fresh, make)
    assert calls["make"] == 3
    assert len([p for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")]) == 3


def flip_last_byte(entry):
    weights = entry / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


def truncate(entry):
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])


def drop_metadata(entry):
    (entry / "model.json").unlink()


def garble_metadata(entry):
    (entry / "model.json").write_text("{not json")


@pytest.mark.parametrize("damage", [flip_last_byte, truncate, drop_metadata, garble_metadata])
def test_damaged_entry_is_retrained_not_trusted(tmp_path, damage):
    cache = ModelCache(tmp_path)
    fresh, make, calls = factory()
    entry = cache.get_or_train("original", {"seed": 0}, fresh, make).path
    damage(entry)
    again = cache.get_or_train("original", {"seed": 0}, fresh, make)
    assert not again.hit and calls["make"] == 2
    assert torch.all(again.model.weight == 2.0)
    assert cache.get_or_train("original", {"seed": 0}, fresh, make).hit  # healed


def test_no_temp_folders_left_behind(tmp_path):
    cache = ModelCache(tmp_path)
    fresh, make, _ = factory()
    cache.get_or_train("original", {"seed": 0}, fresh, make)
    hidden = [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]
    assert hidden == [".locks"]  # the lock files' folder, no half-built entry


# A process that asks the cache for one model; training it takes a while and is logged.
CACHE_USER = """
import os, sys, time, torch
from torch import nn
from unlearn_cli.cache import ModelCache
root, log = sys.argv[1], sys.argv[2]
def fresh():
    return nn.Linear(3, 2)
def make(staging):
    with open(log, "a") as fh:
        fh.write(f"trained by {os.getpid()}\\n")
    time.sleep(float(sys.argv[3]))
    model = fresh()
    with torch.no_grad():
        model.weight.fill_(float(os.getpid()))
    return model
got = ModelCache(root).get_or_train("original", {"seed": 0}, fresh, make)
print(got.hit, float(got.model.weight[0, 0]), flush=True)
"""


def cache_user(tmp_path, sleep: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CACHE_USER, str(tmp_path), str(tmp_path / "log"), str(sleep)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_two_processes_train_a_missing_model_once(tmp_path):
    procs = [cache_user(tmp_path, 2.0) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len((tmp_path / "log").read_text().splitlines()) == 1  # exactly one trained it
    assert sorted(o[0] for o in outputs) == ["False", "True"]  # the other waited and loaded it
    assert outputs[0][1] == outputs[1][1]  # the same weights


def test_a_trainer_killed_mid_training_leaves_no_entry_and_no_stuck_lock(tmp_path):
    victim = cache_user(tmp_path, 60.0)
    deadline = time.monotonic() + 60
    while not (tmp_path / "log").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    victim.kill()
    victim.communicate()
    models = tmp_path / "models"
    assert not [p for p in models.iterdir() if p.is_dir() and not p.name.startswith(".")]
    survivor = cache_user(tmp_path, 0.0)  # the dead holder's lock is gone: it trains at once
    hit, _ = survivor.communicate(timeout=120)[0].split()
    assert survivor.returncode == 0 and hit == "False"
    assert len((tmp_path / "log").read_text().splitlines()) == 2
