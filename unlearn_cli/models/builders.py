"""Model builders, one per `configs/model/<name>.yaml`.

Every model is a `Classifier`: a feature extractor followed by one linear head. Methods that work
on the last layer (influence's last_layer solver, class-row zeroing) find it as `model.head`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from unlearn_cli.options import Count, Options, opt, parse
from unlearn_cli.registry import Choice, Registry
from unlearn_cli.training import TrainOptions

InputShape = tuple[int, int, int]


class Classifier(nn.Module):
    """`features` then the linear `head`.

    `head_path` is where the head sits in the plain network `features` was cut from (e.g. `fc`
    in a torchvision ResNet, whose own `fc` is then an Identity inside `features`): the plain
    state dict, the one the network's own constructor loads, is ours with `features.` dropped and
    `head.` renamed to it. None: the plain layout is this class's own.
    """

    def __init__(self, features: nn.Module, head: nn.Linear, head_path: str | None = None) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.head_path = head_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def plain_key(self, key: str) -> str:
        if self.head_path is None:
            return key
        if key.startswith("head."):
            return f"{self.head_path}.{key[len('head.') :]}"
        return key[len("features.") :]

    def plain_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under the plain network's own names (see the class docstring)."""
        return {self.plain_key(k): v for k, v in self.state_dict().items()}

    def from_plain_keys(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`state` under this class's names, if it is in the plain layout; else unchanged."""
        ours = self.state_dict()
        plain_to_ours = {self.plain_key(k): k for k in ours}
        if set(state) <= set(ours) or not set(state) & set(plain_to_ours):
            return state
        return {plain_to_ours.get(k, k): v for k, v in state.items()}


@dataclass(frozen=True)
class ModelOptions(Options):
    """Every model config has a `train` node; each model's schema sets its training defaults."""

    train: TrainOptions = field(default_factory=TrainOptions, metadata={"help": "training"})


@dataclass(frozen=True)
class CnnOptions(ModelOptions):
    width: Count = opt(16, "channels of the first block (then 2x, 4x)")


@dataclass(frozen=True)
class MlpOptions(ModelOptions):
    hidden: Count = opt(256, "units per hidden layer")
    depth: Count = opt(2, "hidden layers")
    train: TrainOptions = field(
        default_factory=lambda: TrainOptions(epochs=20, lr=0.001, schedule="cosine"),
        metadata={"help": "training"},
    )


@dataclass(frozen=True)
class LogisticOptions(ModelOptions):
    # Full-batch L-BFGS on CE + (weight_decay/2)||w||^2 reaches the exact optimum.
    train: TrainOptions = field(
        default_factory=lambda: TrainOptions(epochs=5, batch_size=256, optimizer="lbfgs", lr=1.0,
                                             weight_decay=0.001, schedule="constant"),
        metadata={"help": "training"},
    )  # fmt: skip


@dataclass(frozen=True)
class ResNet18Options(ModelOptions):
    train: TrainOptions = field(
        default_factory=lambda: TrainOptions(epochs=10, optimizer="sgd", lr=0.05),
        metadata={"help": "training"},
    )


ModelBuilder = Callable[[ModelOptions, InputShape, int], Classifier]
MODELS: Registry[ModelBuilder] = Registry("model")


def model_options_type(name: str) -> type[ModelOptions]:
    """The option schema of model `name`: the annotation of its builder's `opts` parameter."""
    return MODELS.schema(name)


def model_choice(node: Choice[ModelOptions] | Mapping) -> Choice[ModelOptions]:
    """A model pick as typed options: a `Choice`, or a plain `model` node (a checkpoint's
    metadata, an exported program's source) parsed against its schema."""
    if isinstance(node, Choice):
        return node
    return Choice(str(node["name"]), parse(model_options_type(node["name"]), node, "model"))


def model_options(node: Choice[ModelOptions] | Mapping) -> ModelOptions:
    return model_choice(node).options


def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


@MODELS.register("cnn")
def cnn(opts: CnnOptions, shape: InputShape, num_classes: int) -> Classifier:
    w = opts.width
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
def mlp(opts: MlpOptions, shape: InputShape, num_classes: int) -> Classifier:
    layers: list[nn.Module] = [nn.Flatten()]
    width = shape[0] * shape[1] * shape[2]
    for _ in range(opts.depth):
        layers += [nn.Linear(width, opts.hidden), nn.ReLU()]
        width = opts.hidden
    return Classifier(nn.Sequential(*layers), nn.Linear(width, num_classes))


@MODELS.register("logistic")
def logistic(opts: LogisticOptions, shape: InputShape, num_classes: int) -> Classifier:
    return Classifier(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], num_classes))


@MODELS.register("resnet18")
def resnet18(opts: ResNet18Options, shape: InputShape, num_classes: int) -> Classifier:
    from torchvision.models import resnet18 as tv_resnet18  # imported late: slow to import

    net = tv_resnet18(weights=None)  # never downloads: we always train from scratch
    # Small images: a 3x3 stride-1 stem and no max-pool keep spatial detail (CIFAR-style ResNet).
    net.conv1 = nn.Conv2d(shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    head = nn.Linear(net.fc.in_features, num_classes)
    net.fc = nn.Identity()
    return Classifier(net, head, head_path="fc")


def build_model(
    spec: Choice[ModelOptions] | Mapping,
    shape: InputShape,
    num_classes: int,
    seed: int,
    pretrained: bool = True,
) -> Classifier:
    """A freshly initialised model of the run's model pick `spec` (or a plain `model` node);
    the same seed gives the same initial weights. `pretrained=False` skips `model.weights`
    (for a build whose weights a checkpoint replaces anyway)."""
    choice = model_choice(spec)
    opts = choice.options
    if not pretrained and getattr(opts, "weights", None) is not None:
        opts = dataclasses.replace(opts, weights=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS.get(choice.name)(opts, shape, num_classes)
