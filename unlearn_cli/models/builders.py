"""Model builders, one per `configs/model/<name>.yaml`.

Every model is a `Classifier`: a feature extractor followed by one linear head. Methods that work
on the last layer (influence's last_layer solver, class-row zeroing) find it as `model.head`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn

from unlearn_cli.registry import Registry

InputShape = tuple[int, int, int]


class Classifier(nn.Module):
    def __init__(self, features: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


ModelBuilder = Callable[[DictConfig, InputShape, int], Classifier]
MODELS: Registry[ModelBuilder] = Registry("model")


def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


@MODELS.register("cnn")
def cnn(cfg: DictConfig, shape: InputShape, num_classes: int) -> Classifier:
    w = int(cfg.width)
    features = nn.Sequential(
        *conv_block(shape[0], w),
        nn.MaxPool2d(2),
        *conv_block(w, 2 * w),
        nn.MaxPool2d(2),
        *conv_block(2 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return Classifier(features, nn.Linear(4 * w, num_classes))


@MODELS.register("mlp")
def mlp(cfg: DictConfig, shape: InputShape, num_classes: int) -> Classifier:
    layers: list[nn.Module] = [nn.Flatten()]
    width = shape[0] * shape[1] * shape[2]
    for _ in range(int(cfg.depth)):
        layers += [nn.Linear(width, int(cfg.hidden)), nn.ReLU()]
        width = int(cfg.hidden)
    return Classifier(nn.Sequential(*layers), nn.Linear(width, num_classes))


@MODELS.register("logistic")
def logistic(cfg: DictConfig, shape: InputShape, num_classes: int) -> Classifier:
    return Classifier(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], num_classes))


@MODELS.register("resnet18")
def resnet18(cfg: DictConfig, shape: InputShape, num_classes: int) -> Classifier:
    from torchvision.models import resnet18 as tv_resnet18  # imported late: slow to import

    net = tv_resnet18(weights=None)  # never downloads: we always train from scratch
    # Small images: a 3x3 stride-1 stem and no max-pool keep spatial detail (CIFAR-style ResNet).
    net.conv1 = nn.Conv2d(shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    head = nn.Linear(net.fc.in_features, num_classes)
    net.fc = nn.Identity()
    return Classifier(net, head)


def build_model(cfg: DictConfig, shape: InputShape, num_classes: int, seed: int) -> Classifier:
    """A freshly initialised model; the same seed gives the same initial weights."""
    builder = MODELS.get(cfg.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(cfg, shape, num_classes)
