"""Machine-independent cost: sample passes counted while a method (or a retrain) runs.

Wall time moves with the machine and its load; counts do not. Every model a run builds carries a
forward pre-hook (`attach_counter`): while a `counting()` block is open, each call of the whole
network adds its batch size to `grad_samples` (gradients are being recorded: a sample-gradient
evaluation, forward plus backward) or to `forward_samples` (a forward-only pass). Code that runs
the network under torch.func transforms (vmap, jvp, hessian), where one traced call stands for
many samples, turns the hook off with `uncounted()` and adds its counts itself.

`units` weighs a backward pass as two forward passes (the usual rule of thumb), so
`cost_ratio` = retrain's units / a method's units is the speedup a noise-free machine would show.
Work on the linear head alone (influence's last-layer Hessian) is not counted: it is small next
to one pass of the network over the retain set.

A training resumed from an epoch checkpoint (unlearn_cli/resume.py) adds the counts and wall
seconds its checkpoint carries from the killed process (`add_resumed`): the open counters then
hold the whole training's cost, and their `resumed_seconds` is what the timers around them add.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(eq=False)  # open counters are told apart by identity, not by their counts
class Cost:
    grad_samples: int = 0  # sample-gradient evaluations (forward + backward of one sample)
    forward_samples: int = 0  # forward-only sample passes
    # Wall seconds of work done in an earlier, killed process, carried in by a resumed training:
    # a timer around the counted block adds them (they are not part of the counts).
    resumed_seconds: float = 0.0

    @property
    def units(self) -> int:
        """Forward-pass equivalents: a sample gradient costs about three forward passes."""
        return 3 * self.grad_samples + self.forward_samples

    def as_dict(self) -> dict[str, int]:
        return {"grad_samples": self.grad_samples, "forward_samples": self.forward_samples,
                "cost_units": self.units}  # fmt: skip

    def plus(self, other: Cost) -> Cost:
        return Cost(self.grad_samples + other.grad_samples,
                    self.forward_samples + other.forward_samples,
                    self.resumed_seconds + other.resumed_seconds)  # fmt: skip

    def minus(self, other: Cost) -> Cost:
        return Cost(self.grad_samples - other.grad_samples,
                    self.forward_samples - other.forward_samples,
                    self.resumed_seconds - other.resumed_seconds)  # fmt: skip


_open: list[Cost] = []
_paused = 0


@contextlib.contextmanager
def counting(into: Cost | None = None) -> Iterator[Cost]:
    """Count the network passes made inside the block (blocks may nest: each counts all), in a
    new counter or in `into`."""
    cost = Cost() if into is None else into
    _open.append(cost)
    try:
        yield cost
    finally:
        _open.remove(cost)


@contextlib.contextmanager
def uncounted() -> Iterator[None]:
    """Turn the hook off (the block counts its work itself with add_grad / add_forward)."""
    global _paused
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1


def add_grad(samples: int) -> None:
    for cost in _open:
        cost.grad_samples += int(samples)


def add_forward(samples: int) -> None:
    for cost in _open:
        cost.forward_samples += int(samples)


def add_resumed(grad_samples: int, forward_samples: int, seconds: float) -> None:
    """Count, in every open counter, the work an interrupted run did before this one resumed."""
    for cost in _open:
        cost.grad_samples += int(grad_samples)
        cost.forward_samples += int(forward_samples)
        cost.resumed_seconds += float(seconds)


def _count_call(module: nn.Module, args: tuple) -> None:
    if not _open or _paused or not args or not isinstance(args[0], torch.Tensor):
        return
    samples = args[0].shape[0] if args[0].ndim else 1
    records_grad = torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())
    (add_grad if records_grad else add_forward)(samples)


def attach_counter(model: nn.Module) -> nn.Module:
    """Count this model's calls (copies made with copy.deepcopy keep counting)."""
    model.register_forward_pre_hook(_count_call)
    return model


def warm_up(model: nn.Module, x: torch.Tensor, device: torch.device, torch_func: bool,
            forward_batch: int = 1) -> None:  # fmt: skip
    """Pay one-time costs before a timer starts: lazy CUDA/cuDNN and BLAS initialisation for this
    model; for a method that uses it, torch.func's first call (it imports and sets up
    torch._dynamo: about two seconds on a 2-core CPU); and one forward-only batch of
    `forward_batch` samples, the size methods predict with, so that the heap has grown to hold
    a large batch's activations before the timer (kept for reuse: unlearn_cli/host_memory.py)
    and the method's first such batch does not page-fault fresh memory in."""
    import copy

    probe = copy.deepcopy(model).to(device).eval()  # eval: batch norm must not update in place
    xb = x[:2].to(device)
    with uncounted():
        if torch_func:
            from torch.func import functional_call, grad, hessian, jvp, vmap

            params = {n: p.detach() for n, p in probe.named_parameters()}
            grad(lambda p: functional_call(probe, p, (xb,)).sum())(params)
            w = torch.ones(3, device=device)
            vmap(grad(lambda v: (v * w).pow(2).sum()))(torch.ones(2, 3, device=device))
            jvp(lambda v: v.sin(), (w,), (w,))
            hessian(lambda v: v.pow(3).sum())(w)
        if forward_batch > len(xb):
            copies = -(-forward_batch // len(xb))
            with torch.no_grad():
                probe(xb.repeat(copies, *[1] * (xb.dim() - 1))[:forward_batch])
        probe.train()
        probe(xb).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
