"""`unlearn predict CHECKPOINT IMAGE...`: a run's model's top-3 classes for image files.

The checkpoint is read as safetensors (nothing is unpickled) after its sha256 is checked against
the JSON written beside it; images are converted, resized and standardised exactly as the
training data were.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from unlearn_cli.errors import UserError
from unlearn_cli.models import build_model, load_checkpoint
from unlearn_cli.models.checkpoint import read_metadata


def load_run_model(checkpoint: Path) -> tuple[nn.Module, dict]:
    if not checkpoint.is_file() or not checkpoint.with_suffix(".json").is_file():
        raise UserError(f"{checkpoint}: not a run checkpoint (need the .safetensors and its .json)")
    meta = read_metadata(checkpoint)
    shape, classes = tuple(meta["input_shape"]), meta["classes"]

    def fresh() -> nn.Module:
        # the checkpoint holds every weight; its metadata is the plain `model` node
        return build_model(meta["model"], shape, len(classes), seed=0, pretrained=False)

    if meta.get("ensemble_members"):
        from unlearn_cli.methods.sisa import SisaEnsemble

        model: nn.Module = SisaEnsemble(fresh() for _ in range(meta["ensemble_members"]))
    else:
        model = fresh()
    return load_checkpoint(model, checkpoint, sha256=meta["sha256"]).eval(), meta


def load_image(path: Path, meta: dict) -> torch.Tensor:
    norm = meta.get("normalisation") or {}
    if norm.get("pixel_max") is None:
        raise UserError(f"the {meta['dataset']} dataset is not image data; cannot read {path.name}")
    channels, height, width = meta["input_shape"]
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((width, height))
            pixels = np.asarray(img, dtype=np.float32)
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from exc
    x = torch.as_tensor(pixels).reshape(height, width, -1).permute(2, 0, 1)
    x = x / 255.0 * norm["pixel_max"]
    mean = torch.tensor(norm["mean"]).view(-1, 1, 1)
    std = torch.tensor(norm["std"]).view(-1, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


@torch.no_grad()
def top_classes(checkpoint: Path, images: list[Path], k: int = 3) -> list[tuple[str, list]]:
    model, meta = load_run_model(checkpoint)
    results = []
    for path in images:
        probs = F.softmax(model(load_image(path, meta)), dim=1)[0]
        top = probs.topk(min(k, len(probs)))
        pairs = zip(top.values, top.indices, strict=True)
        results.append((str(path), [(meta["classes"][int(i)], float(p)) for p, i in pairs]))
    return results
