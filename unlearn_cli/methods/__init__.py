"""Unlearning methods: one module per method, named like its config and registry key."""

from unlearn_cli.methods import (  # noqa: F401  (importing registers them)
    adversarial,
    boundary_shrink,
    finetune,
    fisher,
    influence,
    l1_sparse,
    negative_gradient,
    random_label,
    retrain,
    salun,
    scrub,
    sisa,
    ssd,
)
from unlearn_cli.methods.base import METHODS, UnlearnContext, UnlearnMethod

__all__ = ["METHODS", "UnlearnContext", "UnlearnMethod"]
