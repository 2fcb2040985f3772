"""The timed unlearning step: a model and a deletion request in, the unlearned model and what
unlearning it cost out.

`timed_unlearning` is the only place a method's wall time and counted sample passes are taken;
a run calls it once, and a stream of deletion requests calls it once per request, each time on
the model the previous request left.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from unlearn_cli.cost import Cost, counting, warm_up
from unlearn_cli.data import ForgetSplit
from unlearn_cli.inference import predict_logits
from unlearn_cli.methods import UnlearnContext, run_method
from unlearn_cli.methods.common import is_finite_model
from unlearn_cli.options import Options


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Unlearning:
    """One timed unlearning: the model after it, its wall seconds and counted sample passes."""

    model: nn.Module
    seconds: float
    cost: Cost


def timed_unlearning(
    method: str, opts: Options, model: nn.Module, request: ForgetSplit, ctx: UnlearnContext
) -> Unlearning:
    """Method `method` with `opts` removes `request`'s forget set from `model` (in place where
    the method works in place), timed and counted.

    One-time library and device set-up is paid before the timer (it is not unlearning work);
    the global generators are seeded with `ctx.seed` so that a method's randomness repeats.
    What resumed training loops did before a kill counts (`resumed_seconds`); the method's
    set-up before any deletion request (`ctx.untimed_*`, e.g. SISA's shards) does not.
    """
    device = ctx.device
    probe = request.data.x_train[torch.as_tensor(request.forget_idx[:2])]
    warm_up(model, probe, device, opts.uses_torch_func(), ctx.predict_batch_size)
    seed_everything(ctx.seed)
    with counting() as counted:
        start = time.perf_counter()
        unlearned = run_method(method, model, request, ctx, opts)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start + counted.resumed_seconds - ctx.untimed_seconds
    return Unlearning(unlearned, seconds, counted.minus(ctx.untimed_cost))


def gives_finite_outputs(model: nn.Module, split: ForgetSplit, device: torch.device) -> bool:
    """Finite weights, and finite logits on a probe of forget and retain samples."""
    if not is_finite_model(model):
        return False
    probe = np.concatenate([split.forget_idx[:256], split.retain_idx[:256]])
    x = split.data.x_train[torch.as_tensor(probe)]
    return bool(torch.isfinite(predict_logits(model, x, device, max(1, len(x)))).all())
