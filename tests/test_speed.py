"""The training loop's speed options and CPU threads; every GPU-only branch also runs here."""

from __future__ import annotations

import pytest
import torch

from unlearn_cli.data import load_dataset
from unlearn_cli.device import resolve_threads
from unlearn_cli.errors import UserError
from unlearn_cli.inference import accuracy, predict_logits
from unlearn_cli.models import build_model
from unlearn_cli.models.checkpoint import load_checkpoint, save_checkpoint
from unlearn_cli.speed import speed_of
from unlearn_cli.training import train_classifier
from unlearn_cli.validate import validate_config

CPU = torch.device("cpu")


def trained(make_cfg, tmp_path, *overrides):
    cfg = make_cfg("dataset=synthetic", "model.width=8", "model.train.epochs=8",
                   "model.train.batch_size=32", *overrides)  # fmt: skip
    data = load_dataset(validate_config(cfg).dataset, tmp_path)
    model = build_model(cfg.model, data.input_shape, data.num_classes, 0)
    train_classifier(model, data.x_train, data.y_train, cfg.model.train, CPU, 0, "t")
    return model, data


def test_auto_leaves_the_cpu_path_alone(make_cfg):
    """`auto` turns nothing on for the CPU; `true` forces each option, channels_last only where
    there is a convolution, and `compile=true` means inductor."""
    cnn = build_model(make_cfg("model=cnn").model, (1, 8, 8), 3, 0)
    speed = speed_of(make_cfg("model=cnn").model.train, cnn, CPU)
    assert not speed.autocast and not speed.channels_last and speed.compile_backend is None
    forced = ["model.train.amp=true", "model.train.channels_last=true", "model.train.compile=true"]
    on = speed_of(make_cfg("model=cnn", *forced).model.train, cnn, CPU)
    assert on.autocast and on.channels_last and on.compile_backend == "inductor"
    mlp = build_model(make_cfg("model=mlp").model, (1, 8, 8), 3, 0)
    assert not speed_of(make_cfg("model=mlp", *forced).model.train, mlp, CPU).channels_last


def test_amp_channels_last_and_compile_train_a_working_model(make_cfg, tmp_path):
    """bf16 autocast, channels_last and torch.compile (eager backend: no C++ build in CI)."""
    plain, data = trained(make_cfg, tmp_path)
    fast, _ = trained(make_cfg, tmp_path, "model.train.amp=true",
                      "model.train.channels_last=true", "model.train.compile=eager")  # fmt: skip
    acc = accuracy(predict_logits(fast, data.x_test, CPU, 256), data.y_test)
    assert acc >= accuracy(predict_logits(plain, data.x_test, CPU, 256), data.y_test) - 10
    assert acc > 80
    # Weights are back in the standard layout, so the checkpoint round-trips.
    assert all(p.is_contiguous() for p in fast.parameters())
    save_checkpoint(fast, tmp_path / "m.safetensors", {})
    blank = build_model(make_cfg("model.width=8").model, data.input_shape, data.num_classes, 1)
    again = load_checkpoint(blank, tmp_path / "m.safetensors").state_dict()
    assert all(torch.equal(v, again[k]) for k, v in fast.state_dict().items())


def test_channels_last_alone_matches_the_default_layout(make_cfg, tmp_path):
    plain, data = trained(make_cfg, tmp_path)
    last, _ = trained(make_cfg, tmp_path, "model.train.channels_last=true")
    for a, b in zip(plain.parameters(), last.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-3)


def test_threads_follow_the_available_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    assert resolve_threads("auto") == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a parallel launcher's share of the cores
    assert resolve_threads("auto") == 1 and resolve_threads(4) == 4
    with pytest.raises(UserError, match="threads"):
        resolve_threads(0)


WHERE_A_LARGE_BLOCK_GOES = """
import ctypes, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = libc.sbrk.restype = ctypes.c_void_p
libc.malloc.argtypes, libc.sbrk.argtypes = [ctypes.c_size_t], [ctypes.c_ssize_t]
if sys.argv[1] == "keep":
    from unlearn_cli.host_memory import keep_freed_memory
    assert keep_freed_memory()
block = libc.malloc(64 * 2**20)
print("heap" if block < libc.sbrk(0) else "own mapping")
"""


def test_large_blocks_come_from_the_reusable_heap_once_thresholds_are_raised():
    """A 64 MiB block (a large batch's activations): by default glibc gives it its own mapping,
    unmapped on free, so the next pass faults all its pages in again; once keep_freed_memory()
    has run it comes from the heap, where a freed block stays mapped for the next one."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")

    def where(mode: str) -> str:
        cmd = [sys.executable, "-c", WHERE_A_LARGE_BLOCK_GOES, mode]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()

    assert where("default") == "own mapping"
    assert where("keep") == "heap"
