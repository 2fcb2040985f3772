"""Unlearning methods: one module per method, named like its config and registry key."""

from unlearn_cli.methods import retrain  # noqa: F401  (registers the method)
from unlearn_cli.methods.base import METHODS, UnlearnContext, UnlearnMethod

__all__ = ["METHODS", "UnlearnContext", "UnlearnMethod"]
