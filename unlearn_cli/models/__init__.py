"""Model builders and safe checkpoints."""

from unlearn_cli.models import torchvision_models  # noqa: F401 - registers model=torchvision
from unlearn_cli.models.builders import MODELS, Classifier, build_model
from unlearn_cli.models.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["MODELS", "Classifier", "build_model", "load_checkpoint", "save_checkpoint"]
