"""Turn the `device` config value into a torch.device, failing early when it cannot be had."""

from __future__ import annotations

import os
import re

import torch

from unlearn_cli.errors import UserError


def resolve_device(spec: str) -> torch.device:
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise UserError(f"unknown device '{spec}'; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"device={spec} was asked for, but CUDA is not available on this machine")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UserError(
            f"device={spec}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device("cuda", index)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a Slurm or container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_threads(spec) -> int:
    """`threads: auto` follows the available cores, or OMP_NUM_THREADS when a launcher set it
    (joblib gives each parallel job its share of the cores that way)."""
    if spec != "auto":
        if not isinstance(spec, int) or isinstance(spec, bool) or spec < 1:
            raise UserError(f"threads must be auto or a whole number >= 1, got {spec!r}")
        return spec
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return int(omp) if omp.isdigit() and int(omp) > 0 else available_cores()
