"""`model=torchvision`: any torchvision classifier, optionally started from weights on disk.

The network's own classification layer (found under `fc`, `classifier`, `heads` or `head`: the
last linear layer there) is replaced by an Identity and a new linear head for the dataset's
classes, so every `Classifier` method, including the last-layer ones, works on it. Weights are
read from a local file only (`model.weights`): nothing is ever downloaded at run time. Retraining
builds the same model, so the retrained reference is fine-tuned from the same pretrained start on
the retain set, the honest gold standard for transfer learning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from unlearn_cli.errors import UserError
from unlearn_cli.models.builders import MODELS, Classifier, InputShape, ModelOptions
from unlearn_cli.models.state_files import load_weights_into, read_state_dict
from unlearn_cli.options import opt
from unlearn_cli.training import TrainOptions

HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")
AUX_HEADS = ("googlenet", "inception_v3")


def classifier_names() -> list[str]:
    from torchvision import models  # imported late: slow to import

    return models.list_models(module=models)


def weights_url(arch: str) -> str | None:
    """Where torchvision publishes the default ImageNet weights of `arch` (None: it has none)."""
    from torchvision import models

    try:
        return models.get_model_weights(arch).DEFAULT.url
    except (ValueError, AttributeError, KeyError):
        return None


@dataclass(frozen=True)
class TorchvisionOptions(ModelOptions):
    arch: str = opt("resnet18", "any name of torchvision.models.list_models(module=models)")
    weights: str | None = opt(None, "a local file of the network's weights (state dict)")
    freeze_backbone: bool = opt(False, "train only the new head (features fixed, BN in eval)")
    train: TrainOptions = field(
        default_factory=lambda: TrainOptions(epochs=5, batch_size=64, optimizer="sgd", lr=0.01,
                                             schedule="cosine"),
        metadata={"help": "training"},
    )  # fmt: skip

    def check(self, where: str) -> None:
        names = classifier_names()
        if self.arch not in names:
            from unlearn_cli.registry import unknown_choice

            raise unknown_choice(f"{where}.arch", self.arch, names)
        if self.weights is not None and not Path(self.weights).expanduser().is_file():
            url = weights_url(self.arch)
            fetch = f"; fetch {url} (torchvision's ImageNet weights) to that path" if url else ""
            raise UserError(f"{where}.weights: no such file {self.weights}{fetch}")


def find_head(net: nn.Module, arch: str) -> tuple[str, nn.Linear]:
    """The dotted path and module of the network's classification layer."""
    for attr in HEAD_ATTRIBUTES:
        module = getattr(net, attr, None)
        if isinstance(module, nn.Linear):
            return attr, module
        if isinstance(module, nn.Module):
            linears = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
            if linears:
                name, layer = linears[-1]
                return f"{attr}.{name}", layer
    raise UserError(f"model.arch={arch} has no linear classification layer under "
                    f"{', '.join(HEAD_ATTRIBUTES)}; choose another architecture")  # fmt: skip


def repeat_grayscale(module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook of the backbone: a 1-channel batch is repeated to the 3 channels every
    torchvision classifier takes (a hook, so `features(x)` does it too and no key changes)."""
    x = args[0]
    return (x.expand(-1, 3, -1, -1), *args[1:]) if x.shape[1] == 1 else None


class PretrainedClassifier(Classifier):
    """A torchvision network cut into features and head. A frozen backbone stays in eval mode
    (its batch-norm statistics are part of what is frozen)."""

    def __init__(self, features: nn.Module, head: nn.Linear, head_path: str,
                 frozen: bool) -> None:  # fmt: skip
        super().__init__(features, head, head_path)
        self.frozen = frozen

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.features.eval()
        return self


@MODELS.register("torchvision")
def torchvision_model(
    opts: TorchvisionOptions, shape: InputShape, num_classes: int
) -> PretrainedClassifier:
    from torchvision import models

    if shape[0] not in (1, 3):
        raise UserError(f"model=torchvision takes 1- or 3-channel images, not {shape[0]}")
    # Auxiliary heads (googlenet, inception_v3) return tuples in training: a single output only.
    extra = {"aux_logits": False, "init_weights": True} if opts.arch in AUX_HEADS else {}
    net = models.get_model(opts.arch, weights=None, **extra)  # never downloads
    head_path, layer = find_head(net, opts.arch)
    if opts.weights is not None:
        state = read_state_dict(Path(opts.weights).expanduser(), "model.weights")
        # The file's own head (ImageNet's 1000 classes, or another task's) is not used.
        head_keys = {f"{head_path}.weight", f"{head_path}.bias"}
        load_weights_into(net, {k: v for k, v in state.items() if k not in head_keys},
                          "model.weights", ignore=head_keys)  # fmt: skip
    net.set_submodule(head_path, nn.Identity())
    head = nn.Linear(layer.in_features, num_classes)
    if opts.freeze_backbone:
        net.requires_grad_(False)
    if shape[0] == 1:
        net.register_forward_pre_hook(repeat_grayscale)
    return PretrainedClassifier(net, head, head_path, opts.freeze_backbone)
