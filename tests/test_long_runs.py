"""Long runs: epoch-level resume after a kill (exactly the weights of an uninterrupted run on the
CPU), full disks and unwritable paths at every write site (one error line, nothing partial, a
trained model that cannot be cached still finishes the run), killed runs shown as such, and a
cache a team can share (umask permissions, read-only use)."""

from __future__ import annotations

import csv
import errno
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import unlearn_cli.atomic
import unlearn_cli.resume
import unlearn_cli.training
from unlearn_cli.cache import ModelCache
from unlearn_cli.cost import attach_counter, counting
from unlearn_cli.data.feed import TrainingFeed
from unlearn_cli.liveness import run_status
from unlearn_cli.record import RunRecord
from unlearn_cli.training import TrainOptions, train_classifier
from unlearn_cli.validate import validate_config

from .conftest import TINY, unlearn_executable

# ----------------------------------------------------------------------------- resume


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # dropout below draws from the global RNG: resume must restore it
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Dropout(0.3), nn.Linear(4 * 8 * 8, 3),
    )  # fmt: skip


def tiny_data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(96, 1, 8, 8, generator=g), torch.randint(0, 3, (96,), generator=g)


class Stop(KeyboardInterrupt):
    """The injected kill: raised right after the loop checkpointed epoch `k`."""


def stop_after_epoch(monkeypatch, k: int) -> None:
    real = unlearn_cli.training.save_epoch

    def save_then_stop(ckpt, epoch, *state):
        real(ckpt, epoch, *state)
        if epoch == k:
            raise Stop

    monkeypatch.setattr(unlearn_cli.training, "save_epoch", save_then_stop)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize(
    "train, feed",
    [
        (TrainOptions(epochs=5, batch_size=16), TrainingFeed()),
        (TrainOptions(epochs=5, batch_size=16, optimizer="sgd", schedule="cosine"),
         TrainingFeed(augment=("crop", "flip"))),
        (TrainOptions(epochs=4, optimizer="lbfgs", lr=0.5), TrainingFeed()),
    ],
    ids=["adamw-onecycle", "sgd-cosine-augmented", "lbfgs"],
)  # fmt: skip
def test_a_stopped_loop_resumes_to_exactly_the_uninterrupted_weights(
    tmp_path, monkeypatch, train, feed
):
    x, y = tiny_data()
    device = torch.device("cpu")
    straight = tiny_net()
    train_classifier(straight, x, y, train, device, 7, "straight", feed=feed)

    ckpt = tmp_path / "staging" / "loop.ckpt"
    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 2)
        with pytest.raises(Stop):
            train_classifier(tiny_net(), x, y, train, device, 7, "killed", feed=feed,
                             checkpoint=ckpt)  # fmt: skip
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    torch.manual_seed(12345)  # the rerun is a new process: its global RNG is elsewhere
    resumed = tiny_net()
    train_classifier(resumed, x, y, train, device, 7, "rerun", feed=feed, checkpoint=ckpt)
    assert_same_weights(resumed, straight)


def test_a_checkpoint_of_other_settings_is_ignored_not_loaded(tmp_path, monkeypatch, caplog):
    x, y = tiny_data()
    device, ckpt = torch.device("cpu"), tmp_path / "loop.ckpt"
    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 2)
        with pytest.raises(Stop):
            train_classifier(tiny_net(), x, y, TrainOptions(epochs=4, batch_size=16), device, 7,
                             "a", checkpoint=ckpt)  # fmt: skip
    other = TrainOptions(epochs=4, batch_size=16, lr=0.01)  # another job, same file
    straight = tiny_net()
    train_classifier(straight, x, y, other, device, 7, "straight")
    rerun = tiny_net()
    train_classifier(rerun, x, y, other, device, 7, "b", checkpoint=ckpt)
    assert "written for other training settings" in caplog.text
    assert_same_weights(rerun, straight)


def test_the_cache_keeps_staging_until_the_entry_is_stored(tmp_path, monkeypatch):
    x, y = tiny_data()
    cache, cfg = ModelCache(tmp_path), TrainOptions(epochs=4, batch_size=16)

    def make(staging: Path) -> nn.Module:
        model = tiny_net()
        train_classifier(model, x, y, cfg, torch.device("cpu"), 3, "original",
                         checkpoint=staging / "original.ckpt")  # fmt: skip
        return model

    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 3)
        with pytest.raises(Stop):
            cache.get_or_train("original", {"k": 1}, tiny_net, make)
    staging = cache.staging_dir(cache.entry_dir("original", {"k": 1}).name)
    assert (staging / "original.ckpt").is_file()
    got = cache.get_or_train("original", {"k": 1}, tiny_net, make)
    assert not got.hit and got.path is not None and not staging.exists()
    straight = tiny_net()
    train_classifier(straight, x, y, cfg, torch.device("cpu"), 3, "straight")
    assert_same_weights(got.model, straight)


def test_a_killed_run_resumes_its_original_and_ends_like_an_uninterrupted_one(
    unlearn_here, tmp_path, monkeypatch
):
    args = ["run", *TINY, "method=retrain", "model.train.epochs=6", "forget_class=1"]
    code, _, err = unlearn_here(*args, f"cache_dir={tmp_path / 'straight'}")
    assert code == 0, err
    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 3)
        code, _, err = unlearn_here(*args)
    assert code == 130 and "rerun to resume" in err
    code, _, err = unlearn_here(*args)
    assert code == 0, err
    assert "original: resuming from epoch 3/6" in err
    runs = sorted((tmp_path / "outputs" / "runs").iterdir())
    metrics = [json.loads((r / "metrics.json").read_text()) for r in runs]
    assert [m["status"] for m in metrics] == ["completed", "interrupted", "completed"]
    assert strip_times(metrics[2]["models"]) == strip_times(metrics[0]["models"])
    staging = tmp_path / "outputs" / "cache" / "models" / ".staging"
    assert not staging.exists() or not any(staging.iterdir())  # removed once stored


def fast_clock(monkeypatch, step: float = 100.0) -> None:
    """Every perf_counter call moves the clock `step` seconds on: a killed run that "took" at
    least `step` seconds, without waiting for them."""
    real, calls = time.perf_counter, iter(range(1, 10**9))
    monkeypatch.setattr(time, "perf_counter", lambda: real() + step * next(calls))


@pytest.mark.parametrize(
    "train",
    [TrainOptions(epochs=5, batch_size=16), TrainOptions(epochs=4, optimizer="lbfgs", lr=0.5)],
    ids=["adamw", "lbfgs"],
)
def test_a_resumed_training_reports_the_whole_trainings_cost(tmp_path, monkeypatch, train):
    x, y = tiny_data()

    def make(staging: Path) -> nn.Module:
        model = attach_counter(tiny_net())
        train_classifier(model, x, y, train, torch.device("cpu"), 3, "original",
                         checkpoint=staging / "original.ckpt")  # fmt: skip
        return model

    straight = ModelCache(tmp_path / "straight").get_or_train("original", {"k": 1}, tiny_net, make)
    cache = ModelCache(tmp_path / "killed")
    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 2)
        fast_clock(patch)
        with pytest.raises(Stop):
            cache.get_or_train("original", {"k": 1}, tiny_net, make)
    staging = cache.staging_dir(cache.entry_dir("original", {"k": 1}).name)
    carried = torch.load(staging / "original.ckpt", weights_only=True)["cost"]
    assert carried["seconds"] >= 100.0  # the killed run's two epochs, on its fast clock
    assert 0 < carried["grad_samples"] < straight.cost.grad_samples
    got = cache.get_or_train("original", {"k": 1}, tiny_net, make)
    assert got.cost.as_dict() == straight.cost.as_dict()
    if train.optimizer != "lbfgs":  # one gradient per sample and epoch, nothing forward-only
        assert (straight.cost.grad_samples, straight.cost.forward_samples) == (5 * len(y), 0)
    assert got.train_seconds >= carried["seconds"]


def test_a_killed_retrain_reports_the_whole_retrainings_cost(unlearn_here, tmp_path,
                                                             monkeypatch):  # fmt: skip
    args = ["run", *TINY, "method=retrain", "model.train.epochs=4", "forget_class=1"]
    code, _, err = unlearn_here(*args, f"cache_dir={tmp_path / 'straight'}")
    assert code == 0, err
    real = unlearn_cli.training.save_epoch

    def stop_in_retrain(ckpt, epoch, *state):
        real(ckpt, epoch, *state)
        if ckpt.path.name == "retrain.ckpt" and epoch == 2:
            raise Stop

    with monkeypatch.context() as patch:
        patch.setattr(unlearn_cli.training, "save_epoch", stop_in_retrain)
        fast_clock(patch)
        assert unlearn_here(*args)[0] == 130
    code, _, err = unlearn_here(*args)
    assert code == 0, err
    assert "retrain: resuming from epoch 2/4" in err
    runs = sorted((tmp_path / "outputs" / "runs").iterdir())
    first, last = (json.loads((r / "metrics.json").read_text())["models"] for r in runs[::2])
    for role in ("retrain", "unlearned"):
        for key in ("grad_samples", "forward_samples", "cost_units", "cost_ratio"):
            assert last[role][key] == first[role][key], (role, key)
    assert last["retrain"]["time_s"] >= 100.0  # the killed run's epochs, on its fast clock
    assert last["unlearned"]["speedup"] >= 100.0 / last["unlearned"]["time_s"]


def test_an_older_checkpoint_without_cost_figures_still_resumes(tmp_path, monkeypatch, caplog):
    x, y = tiny_data()
    device, train = torch.device("cpu"), TrainOptions(epochs=4, batch_size=16)
    straight = tiny_net()
    train_classifier(straight, x, y, train, device, 7, "straight")
    monkeypatch.setattr(unlearn_cli.resume, "_warned_costless", False)
    for k in range(2):  # two loops resume from old checkpoints: one warning
        ckpt = tmp_path / f"old{k}.ckpt"
        with monkeypatch.context() as patch:
            stop_after_epoch(patch, 3)
            with pytest.raises(Stop):
                train_classifier(tiny_net(), x, y, train, device, 7, "a", checkpoint=ckpt)
        state = torch.load(ckpt, weights_only=True)
        del state["cost"]  # as an earlier version wrote it
        torch.save(state, ckpt)
        rerun = attach_counter(tiny_net())
        with counting() as cost:
            train_classifier(rerun, x, y, train, device, 7, "b", checkpoint=ckpt)
        assert_same_weights(rerun, straight)
        assert cost.grad_samples == len(y)  # what is known: the one epoch after the resume
    assert caplog.text.count("without cost figures") == 1


def strip_times(models: dict) -> dict:
    """Metrics without the wall-clock figures, which no two runs share."""
    timed = {"time_s", "speedup", "setup_s"}
    return {role: {k: v for k, v in row.items() if k not in timed} for role, row in models.items()}


def test_sisa_setup_resumes_from_its_slice_checkpoints(unlearn_here, tmp_path, monkeypatch):
    args = ["run", *TINY, "model.train.epochs=2", "method=sisa", "method.shards=2",
            "method.slices=2", "method.epochs_per_slice=2", "forget_fraction=0.1"]  # fmt: skip
    code, _, err = unlearn_here(*args, f"cache_dir={tmp_path / 'straight'}")
    assert code == 0, err
    calls = {"n": 0}
    real = unlearn_cli.training.save_epoch

    def stop_in_sisa(ckpt, epoch, *state):
        real(ckpt, epoch, *state)
        if ckpt.path.name.startswith("sisa-"):
            calls["n"] += 1
            if calls["n"] == 3:  # shard 1 slice 2, first epoch
                raise Stop

    with monkeypatch.context() as patch:
        patch.setattr(unlearn_cli.training, "save_epoch", stop_in_sisa)
        assert unlearn_here(*args)[0] == 130
    code, _, err = unlearn_here(*args)
    assert code == 0, err
    assert "sisa shard 1/2 slice 1: resuming from epoch 2/2" in err
    runs = sorted((tmp_path / "outputs" / "runs").iterdir())
    first, last = (json.loads((r / "metrics.json").read_text()) for r in (runs[0], runs[-1]))
    assert strip_times(last["models"]) == strip_times(first["models"])
    # the slices trained before the kill are in the set-up's cost
    assert last["method_metrics"]["setup_cost"] == first["method_metrics"]["setup_cost"]


# ----------------------------------------------------------------------------- full disks


def test_library_spellings_of_a_full_disk_are_recognised():
    from safetensors import SafetensorError

    from unlearn_cli.atomic import as_os_error

    wrapped = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')  # fmt: skip
    assert as_os_error(wrapped).errno == errno.ENOSPC
    assert as_os_error(RuntimeError("shape mismatch")) is None


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail_replace(monkeypatch, matches) -> None:
    """Every atomic write whose target matches fails as on a full disk (at the rename)."""
    real = os.replace

    def replace(src, dst, *a, **k):
        if matches(Path(dst).absolute()):
            raise enospc()
        return real(src, dst, *a, **k)

    monkeypatch.setattr(unlearn_cli.atomic.os, "replace", replace)


def leftovers(root: Path) -> list[str]:
    """Temp files or folders of atomic writes still lying around."""
    return [str(p) for p in root.rglob("*") if p.name.endswith(".tmp")]


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("unlearn: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_full_disk_at_the_dataset_cache_is_one_line(unlearn_here, tmp_path, monkeypatch):
    fail_replace(monkeypatch, lambda p: p.name.startswith("animal_mnist"))
    code, _, err = unlearn_here("run", "dataset=animal_mnist", "model.width=8", "device=cpu",
                                "model.train.epochs=1")  # fmt: skip
    line = one_error_line(err)
    assert code == 4 and "the dataset cache" in line and "No space left on device" in line
    assert "needed" in line and "free" in line  # how much room it needs, against what is free
    assert not list((tmp_path / "outputs" / "cache" / "datasets").iterdir())
    assert not leftovers(tmp_path)


def test_a_full_disk_at_the_image_store_is_one_line(unlearn_here, tmp_path, monkeypatch,
                                                    make_folder):  # fmt: skip
    import unlearn_cli.data.disk_store as disk_store

    root = make_folder(tmp_path / "pics", broken=False)

    def full(*args, **kwargs):
        raise enospc()

    monkeypatch.setattr(disk_store, "open_memmap", full)
    code, _, err = unlearn_here("run", *TINY, "dataset=imagefolder", f"dataset.root={root}",
                                "dataset.storage=disk", "forget_class=cat")  # fmt: skip
    line = one_error_line(err)
    assert code == 4 and "the on-disk image store" in line
    datasets = tmp_path / "outputs" / "cache" / "datasets"
    assert not datasets.exists() or not list(datasets.iterdir())  # no half-built store


@pytest.mark.parametrize("how", ["at-the-rename", "at-the-write"])
def test_a_model_that_cannot_be_cached_still_finishes_the_run(unlearn_here, tmp_path,
                                                             monkeypatch, how):  # fmt: skip
    models = tmp_path / "outputs" / "cache" / "models"
    if how == "at-the-rename":
        fail_replace(monkeypatch, lambda p: models in p.parents)
    else:  # the bytes themselves do not fit
        real = Path.write_bytes

        def write_bytes(self, data):
            if models in self.absolute().parents and self.name.startswith(".model"):
                raise enospc()
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
    code, _, err = unlearn_here("run", *TINY, "method=retrain")
    assert code == 0 and "Traceback" not in err, err
    flat = " ".join(err.split())  # the console wraps long log lines
    assert flat.count("used for this run but not cached") == 2  # the original and the retrain
    assert "No space left on device" in flat
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    assert [p.name for p in models.iterdir() if not p.name.startswith(".")] == []
    assert not [p for p in models.iterdir() if p.name.startswith(".original")]  # no temp entry


@pytest.mark.parametrize(
    "target, what",
    [("metrics.json", "the run's metrics.json"),
     ("unlearned.safetensors", "the unlearned model's checkpoint"),
     ("metrics.csv", "a metrics table")],
)  # fmt: skip
def test_a_full_disk_in_the_run_folder_is_one_line(unlearn_here, tmp_path, monkeypatch, target,
                                                   what):  # fmt: skip
    fail_replace(monkeypatch, lambda p: p.name == target)
    code, _, err = unlearn_here("run", *TINY, "method=retrain")
    line = one_error_line(err)
    assert code == 4 and what in line and target in line, err
    assert not leftovers(tmp_path)
    assert not list((tmp_path / "outputs").rglob(target)) or target == "metrics.json"


def test_a_full_disk_at_an_epoch_checkpoint_only_warns(unlearn_here, tmp_path, monkeypatch):
    fail_replace(monkeypatch, lambda p: p.suffix == ".ckpt")
    code, _, err = unlearn_here("run", *TINY, "method=retrain")
    assert code == 0 and "Traceback" not in err, err
    assert err.count("training goes on without epoch checkpoints") == 2  # original, retrain
    assert not leftovers(tmp_path)


def test_a_full_disk_at_the_report_and_the_export_is_one_line(unlearn_here, run_cli, tmp_path,
                                                              monkeypatch):  # fmt: skip
    run_cli("run", *TINY, "method=retrain", check=True)
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    with monkeypatch.context() as patch:
        fail_replace(patch, lambda p: p.name in ("table.csv", "table.md", "state_dict.pt"))
        code, _, err = unlearn_here("report", str(run), "--csv", "table.csv")
        assert code == 4 and "the report CSV" in one_error_line(err)
        code, _, err = unlearn_here("export", str(run))
        assert code == 4 and "the exported state dict" in one_error_line(err)
    assert not (tmp_path / "table.csv").exists() and not leftovers(tmp_path)
    assert not (run / "export" / "state_dict.pt").exists()


def test_an_unwritable_outputs_folder_is_one_line(unlearn_here, tmp_path):
    (tmp_path / "outputs").write_text("a file where the run folders would go")
    code, _, err = unlearn_here("run", *TINY)
    line = one_error_line(err)
    assert code == 2 and "cannot be written to" in line


# ----------------------------------------------------------------------------- killed runs


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_whose_process_is_gone_is_killed(make_cfg, tmp_path, run_cli, unlearn_here):
    cfg = make_cfg(*TINY)
    run_dir = tmp_path / "outputs" / "runs" / "a"
    record = RunRecord(run_dir, validate_config(cfg), "class1")
    assert run_status(record.data) == "running"  # this very process: alive
    record.data["process"]["pid"] = dead_pid()
    record.write()
    assert run_status(json.loads((run_dir / "metrics.json").read_text())) == "killed"
    run_cli(
        "run", *TINY, "method=retrain", check=True
    )  # one completed run beside it, so the report has a table
    code, out, err = unlearn_here("report", str(tmp_path / "outputs" / "runs"))
    assert code == 0, err
    flat = " ".join(err.split())  # the console wraps long log lines
    assert "skipping" in flat and ": killed (process" in flat and "rerun the same config" in flat


def test_a_run_on_another_host_is_not_called_killed(make_cfg, tmp_path):
    record = RunRecord(tmp_path / "run", validate_config(make_cfg(*TINY)), "class1")
    record.data["process"] |= {"host": "some-other-node", "pid": dead_pid()}
    assert run_status(record.data) == "running"  # cannot be known from here


def test_the_sweep_summary_shows_killed_jobs(make_cfg, tmp_path):
    from unlearn_cli.evaluation.sweep import summarise_sweep

    record = RunRecord(tmp_path / "0_job", validate_config(make_cfg(*TINY)), "class1")
    record.data["process"]["pid"] = dead_pid()
    record.write()
    assert list(summarise_sweep(tmp_path)["status"]) == ["killed"]


# ----------------------------------------------------------------------------- shared cache


def test_cache_files_follow_the_umask(tmp_path, run_cli):
    old = os.umask(0o022)
    try:
        run_cli("run", *TINY, "method=retrain", check=True)
    finally:
        os.umask(old)
    cache = tmp_path / "outputs" / "cache"
    paths = [p for p in cache.rglob("*") if ".locks" not in p.parts]
    assert any(p.suffix == ".safetensors" for p in paths)
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        wanted = 0o755 if path.is_dir() else 0o644
        assert mode == wanted, f"{path}: {oct(mode)}"  # others can read (and enter) all of it


def test_a_read_only_cache_entry_is_used_without_writing(tmp_path, monkeypatch):
    import unlearn_cli.cache as cache_module

    cache = ModelCache(tmp_path)
    stored = cache.get_or_train("original", {"k": 1}, tiny_net, lambda staging: tiny_net(5))

    denied = PermissionError(errno.EACCES, "Permission denied")

    def no_write(*args, **kwargs):
        raise denied

    def no_folder(folder, *args):  # as the real helpers report it
        raise unlearn_cli.atomic.write_failed(denied, Path(folder), "a folder")

    monkeypatch.setattr(cache_module, "FileLock", no_write)
    monkeypatch.setattr(cache_module, "make_folder", no_folder)
    monkeypatch.setattr(cache_module, "temp_folder", no_folder)
    got = cache.get_or_train("original", {"k": 1}, tiny_net, lambda staging: tiny_net(6))
    assert got.hit
    assert_same_weights(got.model, stored.model)
    # a miss in a read-only cache trains, warns and goes on
    fresh = cache.get_or_train("original", {"k": 2}, tiny_net, lambda staging: tiny_net(7))
    assert not fresh.hit and fresh.path is None


# ----------------------------------------------------------------------------- preemption


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_resumes(tmp_path):
    """The Slurm path (hydra-submitit-launcher) with submitit's local executor: SIGUSR2 (what
    Slurm sends on preemption) makes submitit checkpoint the launcher's job and requeue it; the
    requeued job resumes the original's training from its last epoch checkpoint."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    args = [unlearn_executable(), "run", "-m", "hydra/launcher=submitit_local",
            "dataset=digits", "model.width=8", "model.train.epochs=12", "device=cpu",
            "evaluation.noise_floor=false", "evaluation.plots=false", "forget_class=3",
            "evaluation.representation=false",
            # only the original's training is preempted: no reference to train after it
            "method=finetune", "evaluation.reference=none", "request.copies=off",
            "hydra.sweep.dir=sweep"]  # fmt: skip
    sweep = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    staging = tmp_path / "outputs" / "cache" / "models" / ".staging"
    deadline = time.monotonic() + 120
    while not list(staging.glob("original-*/original.ckpt")):
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.stdout.read()
        time.sleep(0.05)
    (metrics,) = (tmp_path / "sweep").glob("*/metrics.json")
    pid = json.loads(metrics.read_text())["process"]["pid"]
    os.kill(pid, signal_usr2())
    out, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, out
    logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*.err"))
    assert "this job is preempted" in logs and "Requeued job" in logs
    assert "original: resuming from epoch" in logs
    assert json.loads(metrics.read_text())["status"] == "completed"
    with open(tmp_path / "sweep" / "summary.csv", newline="") as f:
        (job,) = csv.DictReader(f)  # one summary, written once the requeued job ended
    assert job["status"] == "completed"


def signal_usr2() -> int:
    import signal

    return signal.SIGUSR2


def test_the_slurm_preset_requeues_on_preemption_and_time_out():
    from hydra import compose, initialize_config_module

    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher.signal_delay_s >= 60 and launcher.max_num_timeout >= 1
