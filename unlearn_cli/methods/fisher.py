"""fisher: Fisher forgetting (Golatkar et al., CVPR 2020, "Eternal Sunshine of the Spotless Net").

Noise is added to every weight with variance noise_scale / F (the paper's alpha), F the diagonal
Fisher of the retain loss: weights the retained data pin down (large F) barely move, weights they
do not constrain (which can only be carrying information about the forget set) are scrambled. As
in the paper's scheme the
variance is capped (`max_var`, lower for the output layer), averaged per output unit for weight
matrices and raised tenfold for the output layer and 1-D parameters. For class forgetting the
forgotten classes' rows of the output layer are set to zero (with almost no noise), so the class
cannot be predicted from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.methods.base import METHODS, UnlearnContext
from unlearn_cli.methods.importance import diagonal_fisher, subsample
from unlearn_cli.options import Auto, Count, NonNegative, Options, Positive, by_targets, opt


@dataclass(frozen=True)
class FisherOptions(Options):
    renamed = {"alpha": "noise_scale"}
    unsuited = {
        "class": "no noise_scale of the tuning grid (1e-6 to 8e-6) forgot the class on every "
        "tuning seed (forget accuracy 100% on seed 0, 45-71% on seed 1, on both variants): "
        "the noise that hides the class on one seed leaves it on another "
        "(configs/sweep/tune_fisher_class.yaml)"
    }
    unsuited_memorising = (
        "no noise scale forgets and keeps utility (configs/sweep/tune_fisher_samples.yaml, "
        "val_gap): its samples noise leaves UA 0.8 (retrain 9.0) and costs up to 9 points of "
        "validation accuracy on a tuning seed, 2x that noise costs 17, 4x scrambles the model "
        "(UA 17.6, validation accuracy down 28)"
    )
    # Samples: a quarter of the class noise (more scrambles what the retained data need).
    noise_scale: Auto[Positive] = by_targets(
        0.000001, 0.00000025, "noise variance = noise_scale / F (the paper's alpha)"
    )
    max_var: Positive = opt(1000.0, "cap on 1/F for hidden weights")
    max_var_head: Positive = opt(100.0, "cap on 1/F for the output layer")
    forgotten_row_var: NonNegative = opt(0.0, "noise variance on the zeroed forgotten-class rows")
    fisher_samples: Count = opt(1000, "retain samples for the diagonal Fisher")

    def uses_torch_func(self) -> bool:
        return True  # per-sample gradients for the diagonal Fisher


def noise_variance(
    p: torch.Tensor, fisher: torch.Tensor, opts: FisherOptions, is_head: bool
) -> torch.Tensor:
    var = (1.0 / (fisher + 1e-8)).clamp(max=opts.max_var_head if is_head else opts.max_var)
    var = opts.noise_scale * var
    if p.ndim > 1:  # one variance per output unit
        var = var.mean(dim=tuple(range(1, p.ndim)), keepdim=True).expand_as(p).clone()
    if is_head or p.ndim == 1:
        var = var * 10
    return var


@METHODS.register("fisher")
@torch.no_grad()
def fisher(
    model: nn.Module, split: ForgetSplit, ctx: UnlearnContext, opts: FisherOptions
) -> nn.Module:
    device = ctx.device
    model.to(device)
    x, y = subsample(
        split.data.x_train, split.data.y_train, opts.fisher_samples, ctx.seed, split.retain_idx
    )
    with torch.enable_grad():
        info = diagonal_fisher(model, x, y, device)
    gen = torch.Generator(device=device).manual_seed(ctx.seed)
    head = {f"head.{n}" for n, _ in model.head.named_parameters()}
    forgotten = torch.as_tensor(split.forget_classes, dtype=torch.long, device=device)
    for name, p in model.named_parameters():
        if name not in info:  # frozen (model.freeze_backbone): no Fisher information, no noise
            continue
        var = noise_variance(p, info[name], opts, name in head)
        mean = p.detach().clone()
        if name in head and len(forgotten):
            mean[forgotten] = 0.0
            var[forgotten] = opts.forgotten_row_var
        noise = torch.randn(p.shape, generator=gen, device=device, dtype=p.dtype)
        p.copy_(mean + var.sqrt() * noise)
    ctx.metrics["zeroed_head_rows"] = [split.data.classes[c] for c in split.forget_classes]
    return model.eval()
