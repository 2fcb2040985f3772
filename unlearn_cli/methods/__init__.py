"""Unlearning methods: one module per method, named like its config and registry key."""

from unlearn_cli.methods import (  # noqa: F401  (importing registers them)
    adversarial,
    influence,
    negative_gradient,
    retrain,
)
from unlearn_cli.methods.base import METHODS, UnlearnContext, UnlearnMethod

__all__ = ["METHODS", "UnlearnContext", "UnlearnMethod"]
