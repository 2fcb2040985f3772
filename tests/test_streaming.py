"""Large image folders: a memory-mapped store streamed through a DataLoader; augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unlearn_cli.data import disk_store, load_dataset
from unlearn_cli.data.feed import TrainingFeed, augment_batch, batch_stream
from unlearn_cli.models import build_model
from unlearn_cli.training import train_classifier
from unlearn_cli.validate import validate_config


def folder_cfg(make_cfg, root, storage, *extra):
    return make_cfg("dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=8",
                    f"dataset.storage={storage}", "dataset.workers=2", *extra)  # fmt: skip


def test_disk_store_holds_the_same_images_as_memory(make_cfg, tmp_path, monkeypatch, make_folder):
    root = make_folder(tmp_path / "animals")
    cache = tmp_path / "cache"
    memory = load_dataset(validate_config(folder_cfg(make_cfg, root, "memory")).dataset, cache)
    disk = load_dataset(validate_config(folder_cfg(make_cfg, root, "disk")).dataset, cache)
    assert not memory.feed.stream and disk.feed.stream and disk.feed.workers == 2
    assert disk.ids() == memory.ids() and disk.classes == memory.classes
    assert torch.equal(disk.y_train, memory.y_train) and torch.equal(disk.y_test, memory.y_test)
    assert torch.allclose(disk.x_train, memory.x_train, atol=1e-4)
    assert torch.allclose(disk.x_test, memory.x_test, atol=1e-4)
    assert np.allclose(disk.mean, memory.mean, rtol=1e-4)
    (store,) = (cache / "datasets").iterdir()  # one finished store, no temp folder left behind
    assert sorted(p.name for p in store.iterdir()) == ["meta.json", "test.npy", "train.npy"]
    # The tensors are views of the mapped files, not copies in memory.
    assert isinstance(np.load(store / "train.npy", mmap_mode="r"), np.memmap)
    assert json.loads((store / "meta.json").read_text())["skipped"] == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("the store was rebuilt")

    monkeypatch.setattr(disk_store, "decoded_images", no_decoding)
    again = load_dataset(validate_config(folder_cfg(make_cfg, root, "disk")).dataset, cache)
    assert torch.equal(again.x_train, disk.x_train)


def test_auto_storage_goes_to_disk_above_the_memory_limit(make_cfg, tmp_path, make_folder):
    root = make_folder(tmp_path / "animals", broken=False)
    small = load_dataset(validate_config(folder_cfg(make_cfg, root, "auto")).dataset, tmp_path)
    big_cfg = folder_cfg(make_cfg, root, "auto", "dataset.memory_limit_mb=0.001")
    big = load_dataset(validate_config(big_cfg).dataset, tmp_path)
    assert not small.feed.stream and big.feed.stream


def test_a_changed_folder_builds_a_new_store(make_cfg, tmp_path, make_folder):
    root = make_folder(tmp_path / "animals", broken=False)
    first = load_dataset(validate_config(folder_cfg(make_cfg, root, "disk")).dataset, tmp_path)
    (root / "cat" / "cat0.png").unlink()
    second = load_dataset(validate_config(folder_cfg(make_cfg, root, "disk")).dataset, tmp_path)
    assert second.num_train + len(second.y_test) == first.num_train + len(first.y_test) - 1
    assert len(list((tmp_path / "datasets").iterdir())) == 2


def test_streamed_training_matches_in_memory_training(make_cfg, tmp_path):
    """Same seed, same rows: the DataLoader path (2 workers) trains bit-identical weights."""
    cfg = make_cfg("dataset=synthetic", "model=mlp", "model.train.epochs=2",
                   "model.train.batch_size=16")  # fmt: skip
    data = load_dataset(validate_config(cfg).dataset, tmp_path)
    rows = np.arange(0, data.num_train, 2)
    weights = []
    for feed in (TrainingFeed(), TrainingFeed(stream=True, workers=2)):
        model = build_model(cfg.model, data.input_shape, data.num_classes, 0)
        train_classifier(model, data.x_train, data.y_train, cfg.model.train,
                         torch.device("cpu"), 0, "t", rows=rows, feed=feed)  # fmt: skip
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_batch_stream_visits_exactly_the_rows_each_pass():
    x = torch.arange(20, dtype=torch.float32)[:, None]
    y = torch.arange(20)
    rows = np.array([1, 4, 5, 9, 12, 17, 18])
    for feed in (TrainingFeed(), TrainingFeed(stream=True, workers=1)):
        batches = list(batch_stream(x, y, 3, torch.Generator().manual_seed(0),
                                    torch.device("cpu"), feed, rows))  # fmt: skip
        assert sorted(torch.cat([yb for _, yb in batches]).tolist()) == rows.tolist()
        assert all(torch.equal(xb[:, 0].long(), yb) for xb, yb in batches)  # rows stay paired


@pytest.mark.parametrize("kinds", [("crop",), ("flip",), ("crop", "flip")])
def test_augmentation_is_a_per_sample_shift_and_flip(kinds):
    x = torch.randn(16, 3, 12, 12)
    out = augment_batch(x, kinds, torch.Generator().manual_seed(0))
    again = augment_batch(x, kinds, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out, again)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3)) if "crop" in kinds else x
    shifts = range(7) if "crop" in kinds else [0]
    changed = 0
    for i in range(len(x)):
        candidates = [
            window
            for dy in shifts
            for dx in shifts
            for window in (padded[i, :, dy : dy + 12, dx : dx + 12],)
            for window in ((window, window.flip(2)) if "flip" in kinds else (window,))
        ]
        assert any(torch.equal(out[i], c) for c in candidates)
        changed += not torch.equal(out[i], x[i])
    assert changed >= 8  # most samples actually moved or flipped


def test_influence_last_layer_streams_like_in_memory(make_cfg, tmp_path, make_folder):
    """The default influence solver computes retain features batch by batch from the store."""
    from unlearn_cli.data.spec import split_from_config
    from unlearn_cli.methods import UnlearnContext, method_options, run_method

    root = make_folder(tmp_path / "animals", broken=False)
    results = []
    for storage in ("memory", "disk"):
        cfg = folder_cfg(make_cfg, root, storage, "method=influence", "forget_class=elephant",
                         "model=mlp", "model.train.epochs=3")  # fmt: skip
        data = load_dataset(validate_config(cfg).dataset, tmp_path)
        split = split_from_config(data, validate_config(cfg))

        def fresh(cfg=cfg, data=data):
            return build_model(cfg.model, data.input_shape, data.num_classes, 0)

        model = fresh()
        train_classifier(model, data.x_train, data.y_train, cfg.model.train,
                         torch.device("cpu"), 0, "t", feed=data.feed)  # fmt: skip
        ctx = UnlearnContext(cfg.model.train, torch.device("cpu"), 0, fresh)
        opts = method_options(cfg.method)
        results.append(run_method("influence", model, split, ctx, opts).state_dict())
    for key, value in results[0].items():
        assert torch.allclose(value, results[1][key], atol=1e-4)


@pytest.mark.slow
def test_cli_run_on_a_streamed_folder(run_cli, tmp_path, make_folder):
    """End to end on a disk store; loading options stay out of the model cache keys."""
    root = make_folder(tmp_path / "animals")
    run_cli("run", "dataset=imagefolder", f"dataset.root={root}", "forget_class=elephant",
            "dataset.storage=disk", "dataset.workers=1", "dataset.augment=[crop,flip]",
            "dataset.image_size=8", "method=finetune", "model.train.epochs=10", "device=cpu",
            "evaluation.noise_floor=false", "evaluation.plots=false", check=True)  # fmt: skip
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    retrain = metrics["models"]["retrain"]
    assert retrain["forget_acc"] == 0.0 and retrain["retain_acc"] >= 90.0
    assert metrics["split"]["num_forget"] == 11  # 12 elephants, one held out for validation
    cached = {p.name for p in (tmp_path / "outputs" / "cache" / "models").iterdir()}
    run_cli("run", "dataset=imagefolder", f"dataset.root={root}", "forget_class=elephant",
            "dataset.storage=memory", "dataset.workers=0", "dataset.augment=[crop,flip]",
            "dataset.image_size=8", "method=retrain", "model.train.epochs=10", "device=cpu",
            "evaluation.noise_floor=false", "evaluation.plots=false", check=True)  # fmt: skip
    assert {
        p.name for p in (tmp_path / "outputs" / "cache" / "models").iterdir()
    } == cached  # elephant's training images, streamed
