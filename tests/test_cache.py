"""The model cache: miss then hit, keys that separate configs, damaged entries retrained."""

from __future__ import annotations

import torch
from torch import nn

from unlearn_cli.cache import ModelCache


def factory():
    calls = {"make": 0}

    def fresh() -> nn.Module:
        return nn.Linear(3, 2)

    def make() -> nn.Module:
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


def test_tampered_entry_is_retrained_not_trusted(tmp_path):
    cache = ModelCache(tmp_path)
    fresh, make, calls = factory()
    entry = cache.get_or_train("original", {"seed": 0}, fresh, make).path
    weights = entry / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    again = cache.get_or_train("original", {"seed": 0}, fresh, make)
    assert not again.hit and calls["make"] == 2
    assert torch.all(again.model.weight == 2.0)


def test_no_temp_folders_left_behind(tmp_path):
    cache = ModelCache(tmp_path)
    fresh, make, _ = factory()
    cache.get_or_train("original", {"seed": 0}, fresh, make)
    assert [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".")] == []
