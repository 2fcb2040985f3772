"""Copies of a request: the detectors against planted ground truth, the three choices
(report, extend, refuse), hidden members of a forgotten class, and bad options refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import TINY, write_image_folder
from unlearn_cli.copies.options import PlantOptions, RequestOptions
from unlearn_cli.copies.plant import augment, plant_copies
from unlearn_cli.copies.request import CopyCheck, planned_scans
from unlearn_cli.copies.scan import Detectors, phash_bits, raw_pixels
from unlearn_cli.data.dataset import from_arrays
from unlearn_cli.data.split import make_split
from unlearn_cli.errors import UserError

DIGITS = ["dataset=digits", *TINY[1:]]  # 8x8 images with pixel values (TINY's synthetic has none)


def noise_images(n: int, size: int = 28, seed: int = 0) -> np.ndarray:
    """Clean synthetic data: shapes of random grey levels on black, away from the border (as
    in animal_mnist's silhouettes), no two alike (the copies benchmark's scan-speed images)."""
    from unlearn_cli.copies.bench import shape_images

    return shape_images(n, size, seed)


def image_split(images: np.ndarray, forget_fraction: float = 0.1, seed: int = 0):
    labels = np.arange(len(images)) % 4
    n = len(images)
    data = from_arrays("noise", ("a", "b", "c", "d"), images, labels, np.arange(n - 20),
                       np.arange(n - 20, n), pixel_max=255.0)  # fmt: skip
    return make_split(data, None, forget_fraction, None, seed)


def test_phash_matches_imagehash_bit_for_bit():
    import imagehash

    images = noise_images(40)
    ours = phash_bits(images[:, None])
    reference = np.stack([imagehash.phash(Image.fromarray(i)).hash.flatten() for i in images])
    assert np.array_equal(ours, reference)
    rgb = np.stack([images[:5]] * 3, axis=1)  # (n, 3, H, W): greyscale through PIL's convert
    assert np.array_equal(phash_bits(rgb), reference[:5])


@pytest.mark.parametrize("kind", ["flip", "shift", "brightness", "jpeg", "noise"])
def test_planted_copies_are_found_and_clean_data_gives_nothing_else(kind):
    split = image_split(noise_images(600))
    detect = Detectors(split.data, ("exact", "pixels", "phash", "features"), 1, 0.997, 0.05, 0.98)
    # features: the centred pixels, a stand-in for a network's that keeps the test exact
    detect.features = lambda x: (x.flatten(1) - x.flatten(1).mean(1, keepdim=True)).double().numpy()
    clean = detect.pairs(split.forget_idx, split.retain_idx, detect.scans)
    assert clean.empty  # nothing above the thresholds on clean data
    planted, truth = plant_copies(split, PlantOptions(share=1.0, max_copies=2,
                                                      augmentations=[kind]), seed=0)  # fmt: skip
    detect.data = planted.data
    found = detect.pairs(planted.forget_idx, planted.retain_idx, detect.scans)
    got = set(zip(found["forget_row"], found["copy_row"], strict=True))
    wanted = set(zip(truth.source.tolist(), truth.rows.tolist(), strict=True))
    assert got <= wanted  # no pair that is not a planted copy
    assert len(got) >= 0.9 * len(wanted)  # recall; BENCHMARKS.md has it on animal_mnist
    if kind == "flip":  # a mirror is the same picture: the exact scan looks up mirrors too
        assert set(found["kind"]) == {"exact"} and found["mirrored"].all()


def test_a_shift_that_moves_content_across_the_border_is_found(monkeypatch):
    """Content at the border (a grey bar along the top) repeated into the uncovered rows moves
    the centre of mass: centring alone misaligns most such copies; the window check, which
    compares the stored images at every offset within 2 pixels, finds them."""
    from scipy.ndimage import gaussian_filter

    import unlearn_cli.copies.scan as scan

    blobs = gaussian_filter(noise_images(300).astype(float), sigma=(0, 1.0, 1.0))
    blobs = blobs / blobs.max(axis=(1, 2), keepdims=True) * 255
    blobs[:, :1, :] = np.random.default_rng(1).integers(60, 100, size=(len(blobs), 1, 1))
    split = image_split(blobs.round().astype(np.uint8), forget_fraction=0.2)
    detect = Detectors(split.data, ("pixels",), 1, 0.997, 0.05, 0.98)
    assert detect.pairs(split.forget_idx, split.retain_idx, ("pixels",)).empty
    planted, truth = plant_copies(split, PlantOptions(share=1.0, max_copies=1,
                                                      augmentations=["shift"]), seed=0)  # fmt: skip
    detect.data = planted.data
    wanted = set(zip(truth.source.tolist(), truth.rows.tolist(), strict=True))

    def found() -> set:
        pairs = detect.pairs(planted.forget_idx, planted.retain_idx, ("pixels",))
        return set(zip(pairs["forget_row"], pairs["copy_row"], strict=True))

    got = found()
    assert got <= wanted and len(got) >= 0.85 * len(wanted)
    monkeypatch.setattr(scan, "WINDOW_CHECK_FROM", 2.0)  # centring alone
    assert len(found()) < 0.5 * len(wanted)


def test_a_reencoded_png_of_the_same_pixels_is_an_exact_copy(make_cfg, tmp_path):
    from unlearn_cli.data import load_dataset
    from unlearn_cli.validate import validate_config

    root = tmp_path / "images"
    write_image_folder(root, per_class=8, broken=False)
    pixels = np.asarray(Image.open(root / "cat" / "cat0.png"))
    Image.fromarray(pixels).save(root / "dog" / "saved-again.png", compress_level=0)
    assert (root / "dog" / "saved-again.png").read_bytes() != (
        root / "cat" / "cat0.png"
    ).read_bytes()
    folder = ["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=12",
              "dataset.test_size=0.25"]  # fmt: skip
    config = validate_config(make_cfg(*TINY[1:], *folder))
    data = load_dataset(config.dataset, config.run.cache_dir)
    ids = list(data.ids())
    cat0 = next(i for i, name in enumerate(ids) if str(name).endswith("cat0.png"))
    again = next(i for i, name in enumerate(ids) if str(name).endswith("saved-again.png"))
    others = np.setdiff1d(np.arange(len(ids)), [cat0])
    found = Detectors(data, ("exact",), 10, 0.9, 0.05).pairs(np.array([cat0]), others, ("exact",))
    assert list(zip(found["copy_row"], found["kind"], strict=True)) == [(again, "exact")]


def test_table_rows_exact_and_near():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(80, 6)).astype(np.float32)
    rows[50] = rows[3]  # an exact copy
    rows[60] = rows[4] + 0.01  # a near one
    data = from_arrays("table", ("a", "b"), rows[:, None, None, :], np.arange(80) % 2,
                       np.arange(70), np.arange(70, 80))  # fmt: skip
    found = Detectors(data, ("exact", "rows"), 10, 0.9, 0.05).pairs(
        np.array([3, 4]), np.setdiff1d(np.arange(70), [3, 4]), ("exact", "rows")
    )
    assert sorted(zip(found["forget_row"], found["copy_row"], found["kind"], strict=True)) == [
        (3, 50, "exact"), (4, 60, "rows")]  # fmt: skip


def spy_retrain(monkeypatch) -> list[np.ndarray]:
    import unlearn_cli.methods.retrain as retrain_module

    trained: list[np.ndarray] = []
    real = retrain_module.train_classifier
    monkeypatch.setattr(retrain_module, "train_classifier", lambda *a, rows=None, **kw:
                        trained.append(np.asarray(rows)) or real(*a, rows=rows, **kw))  # fmt: skip
    return trained


def test_extend_keeps_the_copies_out_of_the_oracle(make_cfg, tmp_path, monkeypatch):
    from unlearn_cli.run import run_experiment
    from unlearn_cli.validate import validate_config

    trained = spy_retrain(monkeypatch)
    plant = ["forget_fraction=0.1", "request.plant.share=0.5", "method=retrain"]
    cfg = validate_config(make_cfg(*DIGITS, *plant, "request.copies=extend"))
    data = run_experiment(cfg, tmp_path / "run")
    copies = data["copies"]
    assert copies["extended_by"] >= copies["planted"]["num_planted"] * 0.5  # 8x8 digits: coarse
    assert data["split"]["num_forget"] > 144  # the request as given (10% of 1,437) grew
    table = __import__("pandas").read_csv(tmp_path / "run" / "copies.csv")
    extended = set(table[(table["set"] == "retain") & ~table["hidden_member"]]["copy_id"])
    ids = list(range(10_000))  # digits ids are row numbers; planted ones are named
    (oracle_rows,) = trained
    assert not extended & {ids[r] if r < 1797 else f"planted-{r - 1797}" for r in oracle_rows}
    # report: the same copies stay in the retain set, and the run says how many
    data = run_experiment(validate_config(make_cfg(*DIGITS, *plant)), tmp_path / "report")
    assert data["copies"]["num_request_copies"] == copies["extended_by"]
    assert data["copies"]["extended_by"] == 0
    assert "copies_acc" in data["models"]["retrain"] and "UA_copied" in data["models"]["retrain"]


def test_refuse_stops_before_any_training(run_cli, tmp_path):
    done = run_cli("run", *DIGITS, "forget_fraction=0.1", "request.plant.share=0.5",
                   "request.copies=refuse", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "request.copies=refuse" in line and "copies.csv" in line
    assert (tmp_path / "run" / "copies.csv").is_file(), line
    assert not list((tmp_path / "cache").glob("models/*"))  # nothing trained


def test_a_relabelled_image_of_the_forgotten_class_is_a_hidden_member(make_cfg, tmp_path):
    from unlearn_cli.run import run_experiment
    from unlearn_cli.validate import validate_config

    cfg = validate_config(make_cfg(*DIGITS, "forget_class=3", "request.plant.share=0.2",
                                   "request.copies=extend", "method=retrain"))  # fmt: skip
    data = run_experiment(cfg, tmp_path / "run")
    copies = data["copies"]
    assert copies["num_hidden_members"] >= copies["planted"]["num_planted"] * 0.5
    assert copies["extended_by"] == 0  # hidden members are never forgotten automatically
    table = __import__("pandas").read_csv(tmp_path / "run" / "copies.csv")
    assert table["hidden_member"].all()


def test_the_copy_scan_is_recorded_and_timed(make_cfg, tmp_path):
    from unlearn_cli.run import run_experiment
    from unlearn_cli.validate import validate_config

    data = run_experiment(validate_config(make_cfg(*DIGITS, "forget_fraction=0.1")),
                          tmp_path / "run")  # fmt: skip
    copies = data["copies"]
    assert copies["mode"] == "report"
    assert copies["scans"] == ["exact", "pixels", "phash", "features"]
    assert copies["seconds"] > 0 and set(copies["seconds_by_scan"]) == set(copies["scans"])
    assert 0 < copies["share_of_run"] < 1
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["copies"]["num_pairs"] == copies["num_pairs"]


BAD = [
    (["request.phash_distance=65"], "request.phash_distance"),
    (["request.feature_similarity=1.5"], "request.feature_similarity"),
    (["request.copies=maybe"], "request.copies"),
    (["request.scan=[colour]"], "request.scan"),
    (["request.plant.share=0"], "request.plant.share"),
    (["request.plant.augmentations=[]"], "request.plant.augmentations is empty"),
    (["dataset=synthetic", "request.scan=[phash]"], "phash hashes images"),
    (["dataset=synthetic", "request.plant.share=0.1"], "request.plant makes image copies"),
    (["forget_fraction=null", "stream=random4", "request.copies=extend"],
     "apply to single requests"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_copy_options_are_refused_before_any_work(run_cli, tmp_path, overrides, message):
    done = run_cli("run", *DIGITS, "forget_fraction=0.1", *overrides)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "cache").glob("models/*"))


def test_a_feature_scan_needs_penultimate_features():
    class NoHead(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)

    split = image_split(noise_images(60))
    with pytest.raises(UserError, match="features needs penultimate features"):
        planned_scans(RequestOptions(scan=["features"]), split, NoHead())
    assert planned_scans(RequestOptions(), split, NoHead()) == ("exact", "pixels", "phash")


def test_augmentations_stay_near_their_image():
    image = noise_images(1)[:, None][0]
    rng = np.random.default_rng(0)
    for kind in ("shift", "brightness", "jpeg", "noise"):
        copy = augment(image, kind, rng)
        assert copy.shape == image.shape and copy.dtype == np.uint8
        assert 0 < np.abs(copy.astype(int) - image.astype(int)).mean() < 30, kind
    assert np.array_equal(augment(image, "flip", rng), image[..., ::-1])


def test_raw_pixels_undo_the_standardisation():
    images = noise_images(10)
    split = image_split(np.concatenate([images, noise_images(30, seed=1)]))
    assert np.array_equal(raw_pixels(split.data, np.arange(10))[:, 0], images)


def test_copy_check_caption_and_counts():
    split = image_split(noise_images(300))
    brightness = PlantOptions(share=0.5, max_copies=1, augmentations=["brightness"])
    planted, _ = plant_copies(split, brightness, seed=1)
    check = CopyCheck(RequestOptions(scan=["exact", "phash"]), planted, ("exact", "phash"),
                      Path("/nonexistent"), 64)  # fmt: skip
    check._scan(("exact", "phash"))
    n = len(check.request_copies())
    assert 0.8 * len(planted.planted_idx) <= n <= len(planted.planted_idx)
    assert f"{n} copies of the request remain in the retain set" in check.caption()


def test_the_every_method_effect_table_pairs_report_with_extend(tmp_path):
    from unlearn_cli.copies.bench import methods_effect, methods_section

    for i, (mode, method, ua) in enumerate([("report", "ssd", 10.0), ("extend", "ssd", 30.0),
                                            ("report", "influence", 5.0)]):  # fmt: skip
        folder = tmp_path / "sweep" / str(i)
        folder.mkdir(parents=True)
        models = {"unlearned": {"UA": ua, "UA_copied": ua / 2},
                  "retrain": {"UA": 20.0 if mode == "extend" else 8.0}}  # fmt: skip
        data = {"status": "completed", "copies": {"mode": mode},
                "split": {"scenario": "random0.1"}, "config": {"seed": 10, "method": method,
                "forget": "random0.1"}, "models": models}  # fmt: skip
        (folder / "metrics.json").write_text(json.dumps(data))
    text = methods_section(methods_effect([tmp_path / "sweep"]))
    assert "| oracle (retrain) | 8.00 | 20.00 |" in text
    assert "| ssd | 10.00 | 30.00 | 5.00 | 15.00 |" in text
    assert "| influence | 5.00 | - | 2.50 | - |" in text  # its extend run is missing


def duplicated_image_folder(tmp_path):
    """An image folder whose dog/saved-again.png has cat0.png's pixels; the dataset options."""
    root = write_image_folder(tmp_path / "images", per_class=8, broken=False)
    pixels = np.asarray(Image.open(root / "cat" / "cat0.png"))
    Image.fromarray(pixels).save(root / "dog" / "saved-again.png")
    return ["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=12",
            "dataset.test_size=0.25"]  # fmt: skip


def test_a_stream_scans_each_request_against_its_own_retain_set(make_cfg, tmp_path):
    from unlearn_cli.data import load_dataset
    from unlearn_cli.stream.run import run_stream
    from unlearn_cli.validate import validate_config

    folder = duplicated_image_folder(tmp_path)
    data = load_dataset(validate_config(make_cfg(*TINY[1:], *folder)).dataset, tmp_path / "cache")
    ids = [str(i) for i in data.ids()]
    cat0 = next(i for i in ids if i.endswith("cat0.png"))
    again = next(i for i in ids if i.endswith("saved-again.png"))
    files = []
    for k, names in enumerate([[next(i for i in ids if i.endswith("dog1.png"))], [cat0]]):
        files.append(tmp_path / f"request{k + 1}.txt")
        files[-1].write_text("".join(f"{n}\n" for n in names))
    steps = (
        f"stream.steps=[{{forget_indices_file: {files[0]}}},{{forget_indices_file: {files[1]}}}]"
    )
    # the model-free scans: a tiny model's features call these noise images alike
    config = validate_config(make_cfg(*TINY[1:], *folder, "method=finetune", steps,
                                      "request.scan=[exact,pixels,phash]"))  # fmt: skip
    done = run_stream(config, tmp_path / "run")
    by_step = done["copies"]["steps"]
    assert by_step["1"]["num_request_copies"] == 0
    assert by_step["2"]["num_request_copies"] == 1
    assert by_step["2"]["csv"] == "copies/step-2/copies.csv"
    table = pd.read_csv(tmp_path / "run" / "copies" / "step-2" / "copies.csv")
    exact = table[table["kind"] == "exact"]
    assert list(zip(exact["forget_id"], exact["copy_id"], strict=True)) == [(cat0, again)]


def test_a_stream_with_a_copied_request_is_refused_before_any_training(run_cli, tmp_path):
    from hydra import compose, initialize_config_module

    from unlearn_cli.data import load_dataset
    from unlearn_cli.validate import validate_config

    folder = duplicated_image_folder(tmp_path)
    with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
        config = validate_config(compose("config", overrides=[*TINY[1:], *folder]))
    ids = [str(i) for i in load_dataset(config.dataset, tmp_path / "scratch").ids()]
    first, second = tmp_path / "request1.txt", tmp_path / "request2.txt"
    first.write_text(next(i for i in ids if i.endswith("dog1.png")) + "\n")
    second.write_text(next(i for i in ids if i.endswith("cat0.png")) + "\n")
    done = run_cli("run", *TINY[1:], *folder, "forget_fraction=null",
                   f"stream.steps=[{{forget_indices_file: {first}}},"
                   f"{{forget_indices_file: {second}}}]",
                   "request.copies=refuse", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "request.copies=refuse" in line and "step-2" in line
    assert not list((tmp_path / "cache").glob("models/*"))  # nothing trained
