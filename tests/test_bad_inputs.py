"""The catalogue of bad inputs: each ends with one clear line on stderr and a non-zero exit code,
before any training, and leaves no file that a later run would trust.

The commands run in-process (`unlearn_cli.cli.main`, as the console script calls it) to keep
the suite fast; `test_cli.py` checks the real script's exit code and stderr once.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from unlearn_cli.models.checkpoint import file_sha256, save_checkpoint
from unlearn_cli.validate import validate_config

from .conftest import TINY


def no_setup(tmp: Path) -> list[str]:
    return []


def folder_of_broken_images(tmp: Path) -> list[str]:
    for name in ("cat", "dog"):
        (tmp / "pics" / name).mkdir(parents=True)
        (tmp / "pics" / name / "a.png").write_bytes(b"\x89PNG but truncated")
    return ["dataset=imagefolder", f"dataset.root={tmp / 'pics'}"]


def forget_list(text: str | None):
    def setup(tmp: Path) -> list[str]:
        path = tmp / "request.txt"
        if text is not None:
            path.write_text(text)
        return [f"forget_indices_file={path}"]

    return setup


def tiny(*args: str):
    return ["run", *TINY, *args]


RUN_CASES = [
    # names of configs, with "did you mean"
    (tiny("method=retrian"), "unknown method 'retrian'. Did you mean 'retrain'?", no_setup),
    (tiny("dataset=animal_mnst"), "Did you mean 'animal_mnist'?", no_setup),
    (tiny("model=cnnn"), "Did you mean 'cnn'?", no_setup),
    (tiny("evaluation=lirra"), "Did you mean 'lira'?", no_setup),
    (tiny("experiment=classwize"), "Did you mean 'classwise'?", no_setup),
    (tiny("model.train.optimizer=adamm"), "Did you mean 'adam", no_setup),
    (
        tiny("forget_clas=class0"),
        "unknown option 'forget_clas'. Did you mean 'forget_class'?",
        no_setup,
    ),
    # the forget set
    (tiny("forget_class=unicorn"), "unknown class 'unicorn'; valid classes: class0", no_setup),
    (tiny("forget_class=[class0,class1,class2,class3]"), "the whole training set", no_setup),
    (tiny("forget_class=[]"), "empty list", no_setup),
    (tiny("forget_fraction=1.5"), "strictly between 0 and 1", no_setup),
    (tiny("forget_fraction=0"), "strictly between 0 and 1", no_setup),
    (tiny("forget_fraction=abc"), "forget_fraction must be a number", no_setup),
    (tiny("forget_fraction=0.001"), "selects 0 of", no_setup),
    (tiny("forget_class=class0", "forget_fraction=0.1"), "give only one of", no_setup),
    (tiny("forget_within=class0"), "give forget_fraction with it", no_setup),
    (tiny(), "not training samples", forget_list("5\n99999\n")),
    (tiny(), "no such file", forget_list(None)),
    (tiny(), "the forget list is empty", forget_list("# nothing to delete\n")),
    # training and method options
    (tiny("model.train.epochs=-3"), "epochs must be a whole number >= 1", no_setup),
    (tiny("model.train.epochs=ten"), "epochs must be a whole number >= 1", no_setup),
    (tiny("model.train.lr=-0.1"), "model.train.lr must be a number > 0", no_setup),
    (tiny("model.train.batch_size=0"), "batch_size must be a whole number >= 1", no_setup),
    (tiny("model.train.schedule=linear"), "schedule must be one of", no_setup),
    (tiny("model.train.amp=maybe"), "amp must be one of auto, true, false", no_setup),
    (tiny("method=negative_gradient", "method.lr=0"), "method.lr must be a number > 0", no_setup),
    (
        tiny("method=salun", "method.forget_epochs=0"),
        "method.forget_epochs must be auto or a whole number >= 1",
        no_setup,
    ),
    (
        tiny("method=salun", "method.epochs=2"),
        "method.epochs was renamed to method.forget_epochs",
        no_setup,
    ),
    (tiny("evaluation.batch_size=0"), "evaluation.batch_size", no_setup),
    (tiny("seed=abc"), "seed must be a whole number", no_setup),
    (tiny("threads=0"), "threads must be auto or a whole number", no_setup),
    (tiny("device=tpu"), "unknown device 'tpu'", no_setup),
    (tiny("device=cuda:7"), "cuda:7", no_setup),
    # the command line itself
    (tiny("seed"), "'seed' is not an override", no_setup),
    (tiny("forget_class=class0,class1"), "is a sweep: add -m", no_setup),
    (tiny("model.train.epochs=[1"), "cannot parse the override", no_setup),
    # datasets
    (tiny("dataset=imagefolder", "dataset.root=/no/such/folder"), "no such folder", no_setup),
    (tiny(), "no readable images", folder_of_broken_images),
    (
        tiny("dataset=cifar10", "dataset.augment=[rotate]"),
        "dataset.augment must be a list of crop, flip",
        no_setup,
    ),
    (
        tiny("dataset=imagefolder", "dataset.root=.", "dataset.storage=cloud"),
        "dataset.storage must be one of auto, memory, disk",
        no_setup,
    ),
    (
        ["run", "dataset=cifar100", "dataset.root=empty", "dataset.download=false"],
        "cifar-100-python",
        no_setup,
    ),
    # other commands
    (["rport"], "Did you mean 'report'?", no_setup),
    (["report", "no/such/folder"], "no/such/folder", no_setup),
    (["audit", "--models", "1"], "--models must be at least 2", no_setup),
    (["audit", "--methods", "retrian", *TINY], "Did you mean 'retrain'?", no_setup),
]
if not torch.cuda.is_available():
    RUN_CASES.append((tiny("device=cuda"), "CUDA is not available", no_setup))
if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
    RUN_CASES.append((["run", "-m", "hydra/launcher=ray_cluster", *TINY],
                      "pip install 'unlearn-cli[ray]'", no_setup))  # fmt: skip


def assert_clean_failure(code, err: str, message: str, root: Path) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("unlearn: error: "), err
    assert message in lines[-1], lines[-1]
    assert len(lines) <= 2, err  # the error, and at most one warning before it
    outputs = root / "outputs"
    runs = outputs / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # no run folder left behind
    models = outputs / "cache" / "models"
    assert not models.exists() or not [p for p in models.iterdir() if p.name != ".locks"]
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]
    assert not leftovers


@pytest.mark.parametrize(("args", "message", "setup"), RUN_CASES, ids=lambda v: None)
def test_bad_input_catalogue(unlearn_here, tmp_path, args, message, setup):
    extra = setup(tmp_path)
    code, _, err = unlearn_here(*args, *extra)
    assert_clean_failure(code, err, message, tmp_path)


def test_catalogue_is_at_least_25_cases():
    assert len(RUN_CASES) >= 25


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real run's checkpoint to damage (a tiny in-process run)."""
    from hydra import compose, initialize_config_module

    from unlearn_cli.run import run_experiment

    tmp = tmp_path_factory.mktemp("ckpt")
    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[*TINY, "method=retrain", "dataset=digits", f"cache_dir={tmp / 'c'}"],
        )
    run_experiment(validate_config(cfg), tmp / "run")
    return tmp / "run" / "checkpoints" / "unlearned.safetensors"


def copy_checkpoint(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    dst.write_bytes(src.read_bytes())
    dst.with_suffix(".json").write_bytes(src.with_suffix(".json").read_bytes())
    return dst


def tampered(ckpt: Path) -> None:
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 0xFF
    ckpt.write_bytes(bytes(data))


def truncated(ckpt: Path) -> None:
    ckpt.write_bytes(ckpt.read_bytes()[:100])


def wrong_architecture(ckpt: Path) -> None:
    """Weights of another network, with a sha256 that matches them: the layout check must catch
    it."""
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    save_checkpoint(torch.nn.Linear(3, 2), ckpt, {k: v for k, v in meta.items() if k != "sha256"})
    assert json.loads(ckpt.with_suffix(".json").read_text())["sha256"] == file_sha256(ckpt)


def missing_metadata(ckpt: Path) -> None:
    ckpt.with_suffix(".json").unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (tampered, "does not match its recorded sha256"),
        (truncated, "does not match its recorded sha256"),
        (wrong_architecture, "cannot load checkpoint"),
        (missing_metadata, "not a run checkpoint"),
    ],
)
def test_damaged_checkpoints_are_refused(unlearn_here, tmp_path, checkpoint, damage, message):
    ckpt = copy_checkpoint(checkpoint, tmp_path)
    damage(ckpt)
    image = tmp_path / "digit.png"
    Image.new("L", (8, 8)).save(image)
    code, out, err = unlearn_here("predict", str(ckpt), str(image))
    assert_clean_failure(code, err, message, tmp_path)
    assert out.strip() == ""  # no prediction from an untrusted file


def test_a_file_that_is_not_an_image_is_refused(unlearn_here, tmp_path, checkpoint):
    ckpt = copy_checkpoint(checkpoint, tmp_path)
    (tmp_path / "notes.png").write_text("not an image")
    code, _, err = unlearn_here("predict", str(ckpt), str(tmp_path / "notes.png"))
    assert_clean_failure(code, err, "cannot read image", tmp_path)
