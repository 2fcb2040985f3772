"""Speed options of the training loop: mixed precision, channels_last, torch.compile.

`model.train.amp`, `.channels_last` and `.compile` default to what pays off on a GPU and is
harmless elsewhere: `auto` turns bf16 autocast and channels_last on for CUDA (conv nets only for
channels_last) and off on the CPU; `true` forces them on any device (the CPU tests use that, so
every GPU-only branch also runs in CI). `compile` is off unless set to true (inductor) or to a
backend name. Evaluation always runs in float32, so metrics never depend on these options.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Speed:
    autocast: bool
    channels_last: bool
    compile_backend: str | None


def _switch(value, default: bool) -> bool:
    return default if value == "auto" else bool(value)


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def speed_of(cfg, model: nn.Module, device: torch.device) -> Speed:
    cuda = device.type == "cuda"
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    compile_opt = cfg.compile
    backend = (
        None
        if compile_opt in (False, None)
        else "inductor"
        if compile_opt is True
        else str(compile_opt)
    )
    return Speed(
        autocast=_switch(cfg.amp, bf16_ok),
        channels_last=_switch(cfg.channels_last, cuda) and has_conv(model),
        compile_backend=backend,
    )


def training_module(model: nn.Module, speed: Speed) -> nn.Module:
    """The module to call in the training loop (shares its parameters with `model`)."""
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    if speed.compile_backend:
        log.info("compiling the model with torch.compile (backend %s)", speed.compile_backend)
        return torch.compile(model, backend=speed.compile_backend)
    return model


def finish_training(model: nn.Module, speed: Speed) -> None:
    """Back to contiguous weights: checkpoints (safetensors) and methods expect them."""
    if speed.channels_last:
        model.to(memory_format=torch.contiguous_format)


def prepare_batch(x: torch.Tensor, speed: Speed) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if speed.channels_last else x


def autocast(speed: Speed, device: torch.device):
    """bf16 autocast for the forward pass (bf16 keeps float32's range: no loss scaling needed)."""
    if not speed.autocast:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
