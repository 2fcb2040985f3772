"""imagefolder: a generated folder of PNG images, the way users bring their own data."""

from __future__ import annotations

import json
import logging

import pytest

from unlearn_cli.data import load_dataset
from unlearn_cli.errors import UserError
from unlearn_cli.validate import validate_config

CLASSES = ("cat", "dog", "elephant")  # the folders `make_folder` (conftest) writes


def test_folder_loads_with_ids_and_skips_broken_images(make_cfg, tmp_path, caplog, make_folder):
    root = make_folder(tmp_path / "animals")
    cfg = make_cfg("dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=8")
    with caplog.at_level(logging.WARNING):
        data = load_dataset(validate_config(cfg).dataset, "unused")
    assert "skipped 1 unreadable image(s): broken.png" in caplog.text
    assert data.classes == ("cat", "dog", "elephant") and data.input_shape == (3, 8, 8)
    assert data.num_train + len(data.y_test) == 45
    assert all(i.split("/")[0] in CLASSES for i in data.ids())


def test_train_and_test_folders_are_the_split(make_cfg, tmp_path, make_folder):
    root = make_folder(tmp_path / "animals", broken=False, split=True)
    cfg = make_cfg("dataset=imagefolder", f"dataset.root={root}", "dataset.channels=1")
    data = load_dataset(validate_config(cfg).dataset, "unused")
    assert data.num_train == 36 and len(data.y_test) == 9 and data.input_shape == (1, 32, 32)
    assert all(i.startswith("train/") for i in data.ids())


@pytest.mark.parametrize("problem", ["missing", "empty_class", "no_classes"])
def test_bad_folders_are_clear_errors(make_cfg, tmp_path, problem, make_folder):
    root = tmp_path / "animals"
    if problem == "empty_class":
        make_folder(root, broken=False)
        (root / "zebra").mkdir()
    elif problem == "no_classes":
        root.mkdir()
    cfg = make_cfg("dataset=imagefolder", f"dataset.root={root}")
    message = {"missing": "no such folder", "empty_class": "zebra has no images",
               "no_classes": "no class folders"}[problem]  # fmt: skip
    with pytest.raises(UserError, match=message):
        load_dataset(validate_config(cfg).dataset, "unused")


def test_cli_resnet18_on_a_png_folder(run_cli, tmp_path, make_folder):
    """The issue's acceptance command on a generated folder (tiny images, one epoch)."""
    root = make_folder(tmp_path / "animals")
    run_cli("run", "dataset=imagefolder", f"dataset.root={root}", "forget_class=elephant",
            "model=resnet18", "method=retrain", "model.train.epochs=1", "dataset.image_size=8",
            "device=cpu",
            "evaluation.noise_floor=false", "evaluation.plots=false", check=True)  # fmt: skip
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["split"]["forget_classes"] == ["elephant"]
    assert metrics["models"]["retrain"]["forget_acc"] == 0.0
