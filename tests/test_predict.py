"""`unlearn predict`: a run's checkpoint classifies image files, safely."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from unlearn_cli.errors import UserError
from unlearn_cli.predict import top_classes
from unlearn_cli.run import run_experiment
from unlearn_cli.validate import validate_config

from .conftest import TINY


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from hydra import compose, initialize_config_module

    import unlearn_cli.cli  # noqa: F401  (resolvers)

    tmp = tmp_path_factory.mktemp("predict")
    overrides = ["dataset=digits", "model=mlp", "model.train.epochs=15", "device=cpu",
                 f"cache_dir={tmp / 'cache'}", "forget_class=3", "method=retrain"]  # fmt: skip
    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run_experiment(validate_config(cfg), tmp / "run")
    return tmp


def write_digit(path, digit: int) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    image = bunch.images[list(bunch.target).index(digit)]  # 0..16 scale, 8x8
    Image.fromarray((image / 16 * 255).astype(np.uint8), mode="L").save(path)


def test_predict_top3_on_real_image_files(digits_run):
    checkpoint = digits_run / "run" / "checkpoints" / "unlearned.safetensors"
    write_digit(digits_run / "zero.png", 0)
    write_digit(digits_run / "three.png", 3)
    results = dict(top_classes(checkpoint, [digits_run / "zero.png", digits_run / "three.png"]))
    zero, three = results[str(digits_run / "zero.png")], results[str(digits_run / "three.png")]
    assert len(zero) == 3 and zero[0][0] == "0"  # a kept class is still recognised
    assert three[0][0] != "3"  # the forgotten class is not predicted any more
    assert sum(p for _, p in zero) <= 1.0 + 1e-6


def test_predict_refuses_tampered_checkpoints_and_bad_images(digits_run, tmp_path):
    checkpoint = digits_run / "run" / "checkpoints" / "unlearned.safetensors"
    (tmp_path / "not_an_image.png").write_text("hello")
    with pytest.raises(UserError, match="cannot read image"):
        top_classes(checkpoint, [tmp_path / "not_an_image.png"])
    tampered = tmp_path / "unlearned.safetensors"
    data = bytearray(checkpoint.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    tampered.with_suffix(".json").write_text(checkpoint.with_suffix(".json").read_text())
    with pytest.raises(UserError, match="sha256"):
        top_classes(tampered, [digits_run / "zero.png"])
    with pytest.raises(UserError, match="not a run checkpoint"):
        top_classes(tmp_path / "missing.safetensors", [digits_run / "zero.png"])


def test_predict_cli(run_cli, tmp_path):
    run_cli("run", *TINY, "method=retrain", check=True)
    (checkpoint,) = (tmp_path / "outputs" / "runs").glob("*/checkpoints/unlearned.safetensors")
    Image.new("L", (8, 8)).save(tmp_path / "x.png")
    proc = run_cli("predict", str(checkpoint), str(tmp_path / "x.png"))
    assert proc.returncode == 2 and "not image data" in proc.stderr  # synthetic has no image form
