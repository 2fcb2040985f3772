"""Checkpoints as safetensors (no pickle, nothing executes on load) plus a JSON of metadata."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors.torch import load_file, save
from torch import nn

from unlearn_cli.atomic import atomic_write_bytes, atomic_write_json
from unlearn_cli.errors import UserError


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    model: nn.Module, path: Path | str, metadata: dict | None = None, what: str = "model weights"
) -> str:
    """Write weights (safetensors) and `<path>.json` metadata atomically; return the sha256."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state), what)
    digest = file_sha256(path)
    atomic_write_json(path.with_suffix(".json"), {"sha256": digest, **(metadata or {})}, what)
    return digest


def load_checkpoint(model: nn.Module, path: Path | str, sha256: str | None = None) -> nn.Module:
    """Load safetensors weights into `model`; a hash mismatch or wrong architecture is an error."""
    path = Path(path)
    if sha256 is not None and file_sha256(path) != sha256:
        raise UserError(f"checkpoint {path} does not match its recorded sha256; refusing to load")
    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"cannot load checkpoint {path}: {first}") from exc
    return model


def read_metadata(path: Path | str) -> dict:
    return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
