"""`unlearn export RUN_DIR`: the unlearned model in forms plain PyTorch uses without this tool.

Written to `RUN_DIR/export/` (or `--out`):
- `state_dict.pt`: the weights under the network's own key names, for `load_state_dict` on the
  model's own constructor (e.g. `torchvision.models.resnet18(num_classes=10)`); saved tensors
  only, so `torch.load(..., weights_only=True)` reads it.
- `model.pt2`: a `torch.export` program of the whole model (TorchScript's successor; any batch
  size), loaded with `torch.export.load(path).module()`. It takes images standardised as in
  training and returns logits.
- `export.json`: the constructor, the classes, the input shape and the standardisation, and the
  sha256 of each file.
An ensemble (sisa) has no single network to export and is refused.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import torch

from unlearn_cli.atomic import atomic_write_bytes, atomic_write_json, make_folder, torch_save_bytes
from unlearn_cli.errors import UserError
from unlearn_cli.models.checkpoint import file_sha256

log = logging.getLogger(__name__)


def plain_constructor(meta: dict, num_classes: int) -> str:
    """Python that builds the network `state_dict.pt` loads into."""
    model = meta["model"]
    if model["name"] == "torchvision":
        return f"torchvision.models.get_model({model['arch']!r}, num_classes={num_classes})"
    if model["name"] == "resnet18":
        channels = meta["input_shape"][0]
        return (f"net = torchvision.models.resnet18(num_classes={num_classes}); "
                f"net.conv1 = torch.nn.Conv2d({channels}, 64, 3, 1, 1, bias=False); "
                "net.maxpool = torch.nn.Identity()")  # fmt: skip
    return (f"unlearn_cli.models.build_model({model!r}, {tuple(meta['input_shape'])}, "
            f"{num_classes}, seed=0)")  # fmt: skip


def plain_network(meta: dict, num_classes: int) -> torch.nn.Module | None:
    """The network `plain_constructor` describes, for the check that the export loads."""
    import torchvision

    model = meta["model"]
    if model["name"] == "torchvision":
        return torchvision.models.get_model(model["arch"], num_classes=num_classes)
    if model["name"] == "resnet18":
        net = torchvision.models.resnet18(num_classes=num_classes)
        net.conv1 = torch.nn.Conv2d(meta["input_shape"][0], 64, 3, 1, 1, bias=False)
        net.maxpool = torch.nn.Identity()
        return net
    return None  # our own layout: build_model is the constructor


def export_run(run_dir: Path, out: Path | None = None) -> list[Path]:
    """Write the export files of the run in `run_dir`; return their paths."""
    from unlearn_cli.predict import load_run_model

    checkpoint = run_dir / "checkpoints" / "unlearned.safetensors"
    if not checkpoint.is_file():
        raise UserError(f"{run_dir}: no checkpoints/unlearned.safetensors; give a run folder")
    model, meta = load_run_model(checkpoint)
    if meta.get("ensemble_members"):
        raise UserError(f"{run_dir} holds a sisa ensemble of {meta['ensemble_members']} models, "
                        "not one network; it cannot be exported as one")  # fmt: skip
    out = out or run_dir / "export"
    num_classes = len(meta["classes"])
    shape = tuple(meta["input_shape"])
    plain = {k: v.detach().cpu().contiguous() for k, v in model.plain_state_dict().items()}
    channels = shape[0]
    grayscale = meta["model"]["name"] == "torchvision" and channels == 1
    probe = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(probe)
    loads = check_plain_load(meta, num_classes, plain, probe, expected, grayscale)
    make_folder(out, "the export folder")
    state_path, program_path = out / "state_dict.pt", out / "model.pt2"
    atomic_write_bytes(state_path, torch_save_bytes(plain), "the exported state dict")
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(model, (probe,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # noqa: BLE001 - tracing failures come in many types
        raise UserError(f"torch.export cannot trace this model ({type(exc).__name__}); "
                        f"{state_path.name} is written, model.pt2 is not") from None  # fmt: skip
    buffer = io.BytesIO()  # torch.export.save wants a .pt2 name; the temp file has another
    torch.export.save(program, buffer)
    atomic_write_bytes(program_path, buffer.getvalue(), "the exported program")
    info = {
        "run": str(run_dir),
        "method": meta.get("method"),
        "forget": meta.get("forget"),
        "classes": meta["classes"],
        "input_shape": list(shape),
        "normalisation": meta.get("normalisation"),
        "state_dict": {
            "file": state_path.name,
            "sha256": file_sha256(state_path),
            "constructor": plain_constructor(meta, num_classes),
            "checked": loads,
            "input": "3 channels: repeat 1-channel images (x.expand(-1, 3, -1, -1))"
            if grayscale else f"{channels} channel(s), standardised as `normalisation` says",
        },
        "program": {"file": program_path.name, "sha256": file_sha256(program_path),
                    "load": "torch.export.load(path).module()"},
    }  # fmt: skip
    atomic_write_json(out / "export.json", info, "the export's JSON")
    log.info("exported %s to %s", run_dir, out)
    return [state_path, program_path, out / "export.json"]


def check_plain_load(meta, num_classes, plain, probe, expected, grayscale) -> str:
    """Load the plain state dict into its constructor's network and compare logits; return
    what was checked (our own layouts are loaded by build_model, as `predict` does)."""
    net = plain_network(meta, num_classes)
    checked = "loaded with strict=True; same logits as the run's model"
    if net is None:  # our own layout: build_model is the constructor
        from unlearn_cli.models import build_model

        net = build_model(meta["model"], tuple(meta["input_shape"]),
                          num_classes, seed=0, pretrained=False)  # fmt: skip
        checked = "unlearn_cli.models.build_model's network " + checked
    net.load_state_dict(plain, strict=True)
    with torch.no_grad():
        got = net.eval()(probe.expand(-1, 3, -1, -1) if grayscale else probe)
    if not torch.allclose(got, expected, atol=1e-5, rtol=1e-4):
        raise UserError("the plain network's logits differ from the run's model; not exported")
    return checked
