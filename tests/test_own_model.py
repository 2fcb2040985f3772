"""Unlearning a model the user already has: `original.checkpoint`, `model=torchvision` with
`model.weights`, `evaluation.reference=none` and `unlearn export`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from unlearn_cli.data import load_dataset
from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.errors import UserError
from unlearn_cli.methods import UnlearnContext, run_method
from unlearn_cli.methods.influence import InfluenceOptions
from unlearn_cli.methods.salun import SalunOptions
from unlearn_cli.models import build_model, save_checkpoint
from unlearn_cli.models.checkpoint import file_sha256
from unlearn_cli.training import TrainOptions, train_classifier
from unlearn_cli.validate import choose

from .conftest import TINY
from .test_bad_inputs import assert_clean_failure

# The synthetic dataset TINY runs on: 4 classes of 8x8 grayscale images.
SHAPE, CLASSES = (1, 8, 8), 4
TINY_TV = [a for a in TINY if not a.startswith("model.")]  # model.width is the cnn's


def tiny_cnn(num_classes: int = CLASSES, width: int = 8):
    cfg = OmegaConf.create({"name": "cnn", "width": width, "train": {}})
    return build_model(cfg, SHAPE, num_classes, seed=3)


def synthetic_data(folder: Path):
    """The dataset TINY runs on (dataset=synthetic with its defaults)."""
    return load_dataset(choose("dataset", {"name": "synthetic", "num_classes": 4,
                        "samples_per_class": 60, "image_size": 8, "noise": 0.6, "test_size": 48,
                        "data_seed": 0, "default_forget_class": "class1"}), folder)  # fmt: skip


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory):
    """A cnn trained here on the synthetic data, as a user's own training script would."""
    data = synthetic_data(tmp_path_factory.mktemp("data"))
    model = tiny_cnn()
    train_classifier(model, data.x_train, data.y_train, TrainOptions(epochs=8, batch_size=32),
                     torch.device("cpu"), 0, "user's training")  # fmt: skip
    return model


def saved(model, folder: Path, kind: str) -> Path:
    if kind == "ours":
        path = folder / "mine.safetensors"
        save_checkpoint(model, path, {"classes": ["class0", "class1", "class2", "class3"]})
    else:
        path = folder / "mine.pt"
        torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("kind", ["ours", "plain"])
def test_unlearning_a_given_checkpoint_trains_no_original(unlearn_here, tmp_path, trained_cnn,
                                                         kind):  # fmt: skip
    path = saved(trained_cnn, tmp_path, kind)
    code, out, err = unlearn_here("run", *TINY, "model.width=8", f"original.checkpoint={path}",
                                  "method=influence")  # fmt: skip
    assert code == 0, err
    log = " ".join((out + err).split())  # the log wraps a long checkpoint path at 160 columns
    assert "training the original" not in log and "not trained here" in log
    models = tmp_path / "outputs" / "cache" / "models"
    assert not list(models.glob("original-*"))  # nothing was trained as the original
    assert list(models.glob("retrain-*"))  # the reference still is
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["original_checkpoint"]["sha256"] == file_sha256(path)
    rows = metrics["models"]
    # The given model is the original: it has not forgotten, the unlearned one has moved.
    assert rows["original"]["forget_acc"] > 90
    assert rows["unlearned"]["forget_acc"] < 50
    assert rows["unlearned"]["avg_gap"] >= 0


class RunsCode:
    """An object whose unpickling would run code (here: create a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def wrong_classes(tmp: Path) -> Path:
    torch.save(tiny_cnn(num_classes=5).state_dict(), tmp / "five.pt")
    return tmp / "five.pt"


def wrong_architecture(tmp: Path) -> Path:
    mlp = build_model(OmegaConf.create({"name": "mlp", "train": {}}), SHAPE, CLASSES, 0)
    torch.save(mlp.state_dict(), tmp / "mlp.pth")
    return tmp / "mlp.pth"


def wrong_width(tmp: Path) -> Path:
    torch.save(tiny_cnn(width=4).state_dict(), tmp / "narrow.pt")
    return tmp / "narrow.pt"


def truncated(tmp: Path) -> Path:
    torch.save(tiny_cnn().state_dict(), tmp / "cut.pt")
    data = (tmp / "cut.pt").read_bytes()
    (tmp / "cut.pt").write_bytes(data[: len(data) // 2])
    return tmp / "cut.pt"


def code_on_load(tmp: Path) -> Path:
    torch.save({"head.weight": RunsCode(tmp / "PWNED")}, tmp / "evil.pt")
    return tmp / "evil.pt"


def pickled_module(tmp: Path) -> Path:
    torch.save(tiny_cnn(), tmp / "module.pt")  # a whole nn.Module, not a state dict
    return tmp / "module.pt"


def not_weights(tmp: Path) -> Path:
    (tmp / "model.pkl").write_bytes(b"whatever")
    return tmp / "model.pkl"


BAD_CHECKPOINTS = [
    (wrong_classes, "has 5 output classes, the dataset 4"),
    (wrong_architecture, "does not fit the model"),
    (wrong_width, "has shape"),
    (truncated, "cannot read cut.pt"),
    (code_on_load, "refusing to unpickle"),
    (pickled_module, "refusing to unpickle"),
    (not_weights, "is not a weights file"),
    (lambda tmp: tmp / "absent.pt", "no such file"),
]


@pytest.mark.parametrize(
    ("make", "message"), BAD_CHECKPOINTS, ids=lambda v: getattr(v, "__name__", None)
)
def test_a_bad_checkpoint_is_refused_before_any_work(unlearn_here, tmp_path, make, message):
    files = tmp_path / "files"
    files.mkdir()
    path = make(files)
    code, out, err = unlearn_here("run", *TINY, "model.width=8", f"original.checkpoint={path}")
    assert_clean_failure(code, err, message, tmp_path)
    assert "original.checkpoint" in err
    assert "training" not in out + err
    assert not (files / "PWNED").exists()  # the pickle's payload never ran


def test_our_checkpoint_of_other_classes_is_refused(unlearn_here, tmp_path, trained_cnn):
    path = tmp_path / "animals.safetensors"
    save_checkpoint(trained_cnn, path, {"classes": ["cat", "dog", "elephant", "frog"]})
    code, _, err = unlearn_here("run", *TINY, "model.width=8", f"original.checkpoint={path}")
    assert_clean_failure(code, err, "was trained on classes ['cat'", tmp_path)


# --- model=torchvision -------------------------------------------------------------------------

ARCHS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0"]


def imagenet_weights(arch: str, folder: Path) -> Path:
    """A stand-in for the published ImageNet file: the same layout (1000-class head), random
    values, saved locally. Nothing is downloaded."""
    torch.manual_seed(1)
    path = folder / f"{arch}-imagenet.pth"
    torch.save(torchvision.models.get_model(arch, weights=None).state_dict(), path)
    return path


def tv_options(arch: str, weights: Path | None = None, freeze: bool = False):
    return OmegaConf.create({"name": "torchvision", "arch": arch, "freeze_backbone": freeze,
                             "weights": None if weights is None else str(weights),
                             "train": {"epochs": 1, "batch_size": 16}})  # fmt: skip


def rgb_split(seed: int = 0) -> ForgetSplit:
    """24 tiny RGB images of 3 classes; class 1 is forgotten."""
    from unlearn_cli.data.dataset import from_arrays
    from unlearn_cli.data.split import make_split

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(36) % 3
    images = torch.rand(36, 3, 16, 16, generator=g) * 60 + labels.view(-1, 1, 1, 1) * 80
    data = from_arrays("rgb", ("a", "b", "c"), images.numpy(), labels.numpy(),
                       torch.arange(24).numpy(), torch.arange(24, 36).numpy(), 255.0)  # fmt: skip
    return make_split(data, "b", None, None, seed)


@pytest.mark.parametrize("pretrained", [False, True], ids=["scratch", "weights"])
@pytest.mark.parametrize("arch", ARCHS)
def test_torchvision_classifiers_train_and_unlearn(tmp_path, arch, pretrained):
    weights = imagenet_weights(arch, tmp_path) if pretrained else None
    cfg = tv_options(arch, weights)
    split = rgb_split()
    data = split.data
    model = build_model(cfg, data.input_shape, data.num_classes, seed=0)
    if weights is not None:  # the backbone starts from the file, the head is new
        file_state = torch.load(weights, weights_only=True)
        plain = model.plain_state_dict()
        first = next(k for k in plain if k.endswith("weight"))
        assert torch.equal(plain[first], file_state[first])
        assert model.head.out_features == 3
    train_opts = TrainOptions(epochs=1, batch_size=16, optimizer="sgd", lr=0.01)
    train_classifier(model, data.x_train, data.y_train, train_opts, torch.device("cpu"), 0, arch)
    ctx = UnlearnContext(train_opts, torch.device("cpu"), 0, lambda: build_model(cfg, (3, 16, 16),
                         3, 0), 64)  # fmt: skip
    for name, opts in (("influence", InfluenceOptions(solver="last_layer", newton_steps=1)),
                       ("salun", SalunOptions(forget_epochs=1, batch_size=8))):  # fmt: skip
        before = {k: v.clone() for k, v in model.state_dict().items()}
        out = run_method(name, __import__("copy").deepcopy(model), split, ctx, opts)
        logits = out(data.x_train[:4])
        assert torch.isfinite(logits).all() and logits.shape == (4, 3)
        after = out.state_dict()
        assert not torch.equal(after["head.weight"], before["head.weight"]), name
        if name == "influence":  # the last-layer solver changes the head only
            changed = [k for k in before if not torch.equal(before[k], after[k])]
            assert all(k.startswith("head.") for k in changed), changed


def test_a_frozen_backbone_keeps_its_weights_and_batch_norm(tmp_path):
    cfg = tv_options("resnet18", imagenet_weights("resnet18", tmp_path), freeze=True)
    split = rgb_split()
    model = build_model(cfg, (3, 16, 16), 3, seed=0)
    start = {k: v.clone() for k, v in model.features.state_dict().items()}
    opts = TrainOptions(epochs=2, batch_size=8, optimizer="sgd", lr=0.05)
    train_classifier(model, split.data.x_train, split.data.y_train, opts, torch.device("cpu"), 0,
                     "frozen")  # fmt: skip
    assert all(torch.equal(v, model.features.state_dict()[k]) for k, v in start.items())
    assert model.train().features.training is False


@pytest.mark.slow
def test_cli_torchvision_with_weights_reference_none_and_export(unlearn_here, tmp_path):
    """docs/own-model.md's worked example in small: pretrained weights on disk, a forget list, no
    retrained oracle, then `unlearn export` loaded by torchvision's own constructor."""
    weights = imagenet_weights("resnet18", tmp_path)
    request = tmp_path / "delete.txt"
    from unlearn_cli.data.split import validation_rows

    data = synthetic_data(tmp_path)
    held_out = set(validation_rows(data, 0.05).tolist())
    ids = [data.ids()[i] for i in range(0, data.num_train, 12) if i not in held_out]
    request.write_text("\n".join(map(str, ids)))
    args = ["run", *TINY_TV, "model=torchvision", "model.arch=resnet18", f"model.weights={weights}",
            "model.train.epochs=2", "model.train.batch_size=32", f"forget_indices_file={request}",
            "method=salun", "evaluation.reference=none"]  # fmt: skip
    code, out, err = unlearn_here(*args)
    assert code == 0, err
    log = out + err
    assert "No retrained reference" in log
    models = tmp_path / "outputs" / "cache" / "models"
    assert list(models.glob("original-*")) and not list(models.glob("retrain-*"))
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["models"]) == {"original", "unlearned"}
    for row in metrics["models"].values():
        assert "avg_gap" not in row and "speedup" not in row and "cost_ratio" not in row
        assert row["unseen_acc"] == row["test_acc"]  # samples: unseen data is the test set
    import pandas as pd

    table = pd.read_csv(run / "metrics.csv")  # fixed columns: empty where nothing was measured
    assert table["avg_gap"].isna().all() and table["speedup"].isna().all()
    code, out, err = unlearn_here("export", str(run))
    assert code == 0, err
    state = torch.load(run / "export" / "state_dict.pt", weights_only=True)
    net = torchvision.models.resnet18(num_classes=4).eval()
    net.load_state_dict(state)  # the model's own constructor, strict
    from unlearn_cli.predict import load_run_model

    ours, _ = load_run_model(run / "checkpoints" / "unlearned.safetensors")
    x = torch.randn(5, *SHAPE)
    with torch.no_grad():
        expected = ours(x)
        assert torch.allclose(net(x.expand(-1, 3, -1, -1)), expected, atol=1e-5)
        program = torch.export.load(str(run / "export" / "model.pt2")).module()
        assert torch.allclose(program(x), expected, atol=1e-5)
    info = json.loads((run / "export" / "export.json").read_text())
    assert info["state_dict"]["sha256"] == file_sha256(run / "export" / "state_dict.pt")
    assert "resnet18" in info["state_dict"]["constructor"]


def test_a_plain_torchvision_state_dict_is_a_valid_original(unlearn_here, tmp_path):
    """A model fine-tuned outside the tool, saved as torchvision's own state dict (fc.*)."""
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(num_classes=4)
    torch.save(net.state_dict(), tmp_path / "finetuned.pth")
    code, out, err = unlearn_here("run", *TINY_TV, "model=torchvision",
                                  "model.arch=mobilenet_v3_small",
                                  f"original.checkpoint={tmp_path / 'finetuned.pth'}",
                                  "method=finetune", "method.retain_epochs=1",
                                  "evaluation.reference=none")  # fmt: skip
    assert code == 0, err
    assert not (tmp_path / "outputs" / "cache" / "models").exists() or not list(
        (tmp_path / "outputs" / "cache" / "models").glob("*-*")
    )  # no original, no retrain: nothing trained at all
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    from unlearn_cli.predict import load_run_model

    given = build_model(tv_options("mobilenet_v3_small"), SHAPE, 4, 0)
    given.load_state_dict(given.from_plain_keys(net.state_dict()))
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(given.eval()(x), net.eval()(x.expand(-1, 3, -1, -1)), atol=1e-5)
    assert metrics["original_checkpoint"]["sha256"] == file_sha256(tmp_path / "finetuned.pth")
    load_run_model(run / "checkpoints" / "unlearned.safetensors")


TORCHVISION_BAD = [
    (["model.arch=resnet81"], "Did you mean 'resnet18'"),
    (["model.weights=/nowhere/resnet18.pth"], "download.pytorch.org/models/resnet18"),
    (["model.arch=vit_b_16"], "cannot take 1x8x8 inputs"),
    (["model.arch=squeezenet1_0"], "no linear classification layer"),
]


@pytest.mark.parametrize(("extra", "message"), TORCHVISION_BAD, ids=lambda v: None)
def test_torchvision_mistakes_are_one_line(unlearn_here, tmp_path, extra, message):
    code, out, err = unlearn_here("run", *TINY_TV, "model=torchvision", *extra)
    assert_clean_failure(code, err, message, tmp_path)
    assert "training" not in out + err


def test_reference_none_is_refused_with_ulira(unlearn_here, tmp_path):
    code, _, err = unlearn_here("run", *TINY, "evaluation=ulira", "evaluation.reference=none")
    assert_clean_failure(code, err, "needs evaluation.reference=retrain", tmp_path)


def test_report_handles_runs_with_and_without_a_reference(unlearn_here, tmp_path):
    for reference in ("retrain", "none"):
        code, _, err = unlearn_here("run", *TINY, "method=finetune",
                                    f"evaluation.reference={reference}",
                                    f"hydra.run.dir=outputs/runs/{reference}")  # fmt: skip
        assert code == 0, err
    code, out, err = unlearn_here("report", str(tmp_path / "outputs" / "runs"),
                                  "--csv", str(tmp_path / "r.csv"))  # fmt: skip
    assert code == 0, err
    import pandas as pd

    table = pd.read_csv(tmp_path / "r.csv")
    finetune = table[table["method"] == "finetune"]
    assert len(finetune) == 2  # the two kinds of run are not merged
    assert finetune["scenario"].str.endswith("(no reference)").sum() == 1
    assert finetune["avg_gap"].isna().sum() == 1  # absent where there was no reference
    assert "(no reference)" in out
    assert finetune["unseen_acc"].notna().sum() == 1  # what the no-reference run measured


def test_retrain_without_a_reference_is_a_row_of_its_own(unlearn_here, tmp_path):
    code, _, err = unlearn_here("run", *TINY, "method=retrain", "evaluation.reference=none")
    assert code == 0, err
    code, out, err = unlearn_here("report", str(tmp_path / "outputs" / "runs"),
                                  "--csv", str(tmp_path / "r.csv"))  # fmt: skip
    assert code == 0, err
    import pandas as pd

    methods = set(pd.read_csv(tmp_path / "r.csv")["method"])
    assert "retrain" in methods and len(methods) == 2  # the original and the retrained one


def test_imagenet_normalisation_uses_the_fixed_statistics(tmp_path, make_folder):
    from unlearn_cli.data.dataset import IMAGENET_MEAN, IMAGENET_STD

    root = make_folder(tmp_path / "pics", broken=False)
    cfg = OmegaConf.create({"name": "imagefolder", "root": str(root), "image_size": 12,
                            "channels": 3, "test_size": 0.2, "default_forget_class": None,
                            "storage": "memory", "memory_limit_mb": 2048, "workers": 0,
                            "augment": [], "normalise": "imagenet"})  # fmt: skip
    data = load_dataset(choose("dataset", cfg), tmp_path / "cache")
    assert data.mean == pytest.approx([255 * m for m in IMAGENET_MEAN])
    assert data.std == pytest.approx([255 * s for s in IMAGENET_STD])


def test_a_given_original_may_be_asked_to_forget_a_validation_row(tmp_path):
    """Our originals never train on the validation split, so a forget list may not name its rows;
    a user's own model may have trained on any row, so there the row is forgotten instead."""
    from unlearn_cli.data.split import make_split, validation_rows
    from unlearn_cli.errors import UserError

    data = synthetic_data(tmp_path)
    row = int(validation_rows(data, 0.05)[0])
    listed = [str(data.ids()[row]), str(data.ids()[(row + 1) % data.num_train])]
    with pytest.raises(UserError, match="validation split"):
        make_split(data, None, None, None, 0, forget_ids=listed)
    split = make_split(data, None, None, None, 0, forget_ids=listed, given_original=True)
    assert row in split.forget_idx and row not in split.validation_idx
    assert row not in split.retain_idx


@pytest.mark.slow
def test_every_method_runs_on_a_frozen_backbone_and_leaves_it_alone(tmp_path):
    """With model.freeze_backbone only the head may change, whatever the method (ssd and
    fisher once looked up importances the frozen weights do not have)."""
    import copy

    from unlearn_cli.methods import METHODS, method_options

    cfg = tv_options("resnet18", freeze=True)
    split = rgb_split()
    model = build_model(cfg, (3, 16, 16), 3, seed=0)
    train_opts = TrainOptions(epochs=1, batch_size=16, optimizer="sgd", lr=0.01)
    train_classifier(model, split.data.x_train, split.data.y_train, train_opts,
                     torch.device("cpu"), 0, "frozen")  # fmt: skip
    start = {k: v.clone() for k, v in model.features.named_parameters()}
    for name in METHODS.names():
        node = OmegaConf.load(Path(__file__).parents[1] / "configs" / "method" / f"{name}.yaml")
        if name == "scrub":  # its 180 min steps on resnet18 took 15 s; a few show the same
            node.retain_steps = 5
        opts = method_options(node, "class")
        try:
            opts.check_model(model)
        except UserError as refused:  # they change conv weights: none of them is trainable
            assert name in ("msg", "conv_transpose") and "freeze_backbone" in str(refused), name
            continue
        ctx = UnlearnContext(train_opts, torch.device("cpu"), 0,
                             lambda: build_model(cfg, (3, 16, 16), 3, 0), 64)  # fmt: skip
        out = run_method(name, copy.deepcopy(model), split, ctx, opts)
        assert torch.isfinite(out(split.data.x_train[:2])).all(), name
        if name not in ("retrain", "sisa"):  # those train fresh models (frozen the same way)
            moved = [k for k, v in out.features.named_parameters() if not torch.equal(v, start[k])]
            assert not moved, (name, moved[:3])


def test_torchvision_archs_with_auxiliary_heads_train(tmp_path):
    cfg = tv_options("googlenet")
    split = rgb_split()
    model = build_model(cfg, (3, 16, 16), 3, seed=0)
    opts = TrainOptions(epochs=1, batch_size=16)
    train_classifier(model, split.data.x_train, split.data.y_train, opts, torch.device("cpu"), 0,
                     "googlenet")  # fmt: skip
    assert model(split.data.x_train[:2]).shape == (2, 3)


def test_a_malformed_metadata_file_is_one_line(unlearn_here, tmp_path, trained_cnn):
    path = saved(trained_cnn, tmp_path, "ours")
    path.with_suffix(".json").write_text("{not json")
    code, _, err = unlearn_here("run", *TINY, "model.width=8", f"original.checkpoint={path}")
    assert_clean_failure(code, err, "is not valid JSON", tmp_path)


def test_the_cache_keys_by_the_content_of_model_weights(tmp_path):
    from unlearn_cli.cache import model_key
    from unlearn_cli.models.builders import model_choice

    weights = imagenet_weights("resnet18", tmp_path)
    node = model_choice(tv_options("resnet18", weights))
    before = model_key(node)
    torch.manual_seed(7)  # another file at the same path
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    assert model_key(node) != before


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn", "resnet18"])
def test_export_of_our_own_models_loads_in_plain_torch(unlearn_here, tmp_path, model):
    extra = ["model.width=8"] if model == "cnn" else ["model=resnet18", "model.train.epochs=1"]
    code, _, err = unlearn_here("run", *TINY_TV, *extra, "method=finetune")
    assert code == 0, err
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    code, _, err = unlearn_here("export", str(run))
    assert code == 0, err
    info = json.loads((run / "export" / "export.json").read_text())
    assert "same logits" in info["state_dict"]["checked"]
    state = torch.load(run / "export" / "state_dict.pt", weights_only=True)
    if model == "resnet18":  # torchvision's constructor with the small-image stem it names
        net = torchvision.models.resnet18(num_classes=4)
        net.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
        net.maxpool = torch.nn.Identity()
        net.load_state_dict(state)
        from unlearn_cli.predict import load_run_model

        ours, _ = load_run_model(run / "checkpoints" / "unlearned.safetensors")
        x = torch.randn(3, *SHAPE)
        with torch.no_grad():
            assert torch.allclose(net.eval()(x), ours(x), atol=1e-5)
