"""Weights from files the user brings: a trained original (`original.checkpoint`) or a backbone
(`model.weights`).

Two formats are read, neither of which can run code: safetensors (ours, with its `.json` of
metadata, or anyone's) and a plain PyTorch state dict (`.pt`/`.pth`) loaded with
`torch.load(weights_only=True)`, which refuses pickled modules and any other object. Every problem
(a missing, truncated or unsafe file, missing or unexpected keys, a shape or class-count
mismatch) is one `UserError` line, raised before any training.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from unlearn_cli.errors import UserError, first_line

SUFFIXES = (".safetensors", ".pt", ".pth")
# Keys under which training scripts commonly nest the state dict they save.
WRAPPERS = ("state_dict", "model_state_dict", "model")


def check_suffix(path: Path, key: str) -> None:
    if path.suffix not in SUFFIXES:
        raise UserError(
            f"{key}: {path.name} is not a weights file; give a "
            f"{' or '.join(SUFFIXES)} file (a state dict, never a pickled model)"
        )


def read_state_dict(path: Path, key: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or plain state-dict file, on the CPU."""
    check_suffix(path, key)
    if not path.is_file():
        raise UserError(f"{key}: no such file {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{key}: cannot read {path.name}: {first_line(exc)}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything but tensors and plain containers: a pickled module or
        # an object that would run code on load.
        raise UserError(f"{key}: {path.name} is not a plain state dict; refusing to unpickle it "
                        f"({first_line(exc)})") from None  # fmt: skip
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise UserError(f"{key}: cannot read {path.name} (truncated or not a PyTorch file: "
                        f"{first_line(exc)})") from None  # fmt: skip
    return tensors_of(state, path, key)


def tensors_of(state: object, path: Path, key: str) -> dict[str, torch.Tensor]:
    if isinstance(state, dict):
        for wrapper in WRAPPERS:
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not state:
        raise UserError(f"{key}: {path.name} holds no state dict (got {type(state).__name__})")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{key}: {path.name} is not a state dict of tensors ({bad[0]!r} is not)")
    # A model saved from nn.DataParallel / DistributedDataParallel prefixes every key.
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_weights_into(
    model: nn.Module, state: dict[str, torch.Tensor], key: str, ignore: set[str] = frozenset()
) -> None:
    """Load `state` into `model` strictly (keys in `ignore` may be missing), or raise one line
    that names the first missing key, unexpected key or shape mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and k not in ignore]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise UserError(f"{key} does not fit the model: {'; '.join(parts)} (wrong model or "
                        "model.arch?)")  # fmt: skip
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise UserError(
                f"{key} does not fit the model: {name} has shape "
                f"{tuple(tensor.shape)}, the model {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=not ignore)


def load_original(model: nn.Module, path: Path, classes: tuple[str, ...]) -> str:
    """Load `original.checkpoint` into `model` (a fresh build of the configured architecture);
    return the file's sha256. Our checkpoints are checked against their recorded hash and
    classes; a plain state dict may use the network's own key names (see `Classifier`)."""
    from unlearn_cli.models.checkpoint import file_sha256, read_metadata

    key = "original.checkpoint"
    state = read_state_dict(path, key)
    digest = file_sha256(path)
    if path.suffix == ".safetensors" and path.with_suffix(".json").is_file():
        try:
            meta = read_metadata(path)
        except (ValueError, OSError) as exc:
            raise UserError(f"{key}: {path.with_suffix('.json').name} is not valid JSON "
                            f"({first_line(exc)})") from None  # fmt: skip
        if not isinstance(meta, dict):
            raise UserError(f"{key}: {path.with_suffix('.json').name} is not a metadata object")
        if meta.get("sha256") not in (None, digest):
            raise UserError(f"{key}: {path.name} does not match the sha256 in its .json")
        if meta.get("ensemble_members"):
            raise UserError(f"{key}: {path.name} is an ensemble (sisa); give a single model")
        if "classes" in meta and list(meta["classes"]) != list(classes):
            raise UserError(f"{key}: {path.name} was trained on classes {meta['classes']}, "
                            f"the dataset has {list(classes)}")  # fmt: skip
    if hasattr(model, "from_plain_keys"):
        state = model.from_plain_keys(state)
    head = state.get("head.weight")
    if head is not None and head.ndim == 2 and head.shape[0] != len(classes):
        raise UserError(f"{key}: {path.name} has {head.shape[0]} output classes, the dataset "
                        f"{len(classes)}")  # fmt: skip
    load_weights_into(model, state, key)
    return digest
