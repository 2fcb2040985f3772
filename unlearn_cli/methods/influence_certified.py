"""Certified removal (Guo et al. 2020) for `influence`: Gaussian noise on the updated weights and
the (epsilon, delta) figure it earns.

With l2 > 0 the retain objective is l2-strongly convex for a linear model, so
||theta' - theta*_r|| <= ||grad L_r(theta')|| / l2 =: Delta. Adding N(0, sigma^2 I) to theta'
(`noise_sigma`) makes it (epsilon, delta)-indistinguishable from theta*_r + the same noise by the
Gaussian mechanism, epsilon = Delta * sqrt(2 ln(1.25/delta)) / sigma. The figure is data-dependent
(Delta is measured, not bounded a priori) and only meaningful for convex models.
"""

from __future__ import annotations

import logging
import math

import torch

# The method's own logger: its warnings read as influence's in the run log, as they always have.
log = logging.getLogger("unlearn_cli.methods.influence")


def add_certified_noise(
    theta: torch.Tensor, info: dict, l2: float, opts, linear: bool, seed: int
) -> torch.Tensor:
    """theta + N(0, noise_sigma^2 I) from a generator seeded with `seed`; the epsilon (or why
    there is none) goes into `info`."""
    gen = torch.Generator().manual_seed(seed)
    noisy = theta + torch.randn(theta.shape, generator=gen).to(theta.device) * opts.noise_sigma
    info.update(certified_epsilon_of(info, l2, opts, linear))
    return noisy


def certified_epsilon_of(info: dict, l2: float, opts, linear: bool) -> dict:
    """The Gaussian mechanism's epsilon for the measured residual, where it means something.

    The bound ||theta' - theta*_r|| <= ||grad L_r(theta')|| / l2 needs an l2-strongly convex
    objective: a linear model (features without parameters), solved exactly (the last-layer
    solver *is* exact on a linear model). On a deep net it certifies nothing, so no figure is
    given. The Gaussian mechanism's sigma >= Delta sqrt(2 ln(1.25/delta)) / eps holds only for
    eps < 1: larger values are flagged as not a valid guarantee.
    """
    if not (linear and l2 > 0 and opts.solver != "cg" and "gradient_residual_norm" in info):
        return {"certified_epsilon": None,
                "certified_epsilon_note": "not reported: the bound needs a linear model, l2 > 0 "
                                          "and an exact solver"}  # fmt: skip
    factor = math.sqrt(2 * math.log(1.25 / opts.noise_delta))
    eps = info["gradient_residual_norm"] / l2 * factor / opts.noise_sigma
    out = {"certified_epsilon": eps, "certified_epsilon_valid": eps < 1}
    if eps >= 1:
        out["certified_epsilon_note"] = ("epsilon >= 1: the Gaussian mechanism's bound holds only "
                                         "for epsilon < 1, so this certifies nothing")  # fmt: skip
        log.warning("influence: certified epsilon %.3g >= 1 is not a valid guarantee (raise "
                    "method.noise_sigma)", eps)  # fmt: skip
    return out
