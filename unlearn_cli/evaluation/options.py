"""The `evaluation` node's schema (configs/evaluation/*.yaml)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from unlearn_cli.errors import UserError
from unlearn_cli.options import Count, Natural, Options, Range, opt
from unlearn_cli.registry import Registry


@dataclass(frozen=True)
class LiraOptions(Options):
    shadow_models: Annotated[int, Range(ge=2)] = opt(
        8, "LiRA: shadow models, each on a random half; U-LiRA: shadow pairs (and LiRA's beside)"
    )
    seed: Natural = opt(
        1000, "LiRA: shadow subsets and initialisation; U-LiRA: the pairs' seeds count up from it"
    )


@dataclass(frozen=True)
class EvaluationOptions(Options):
    batch_size: Count = opt(1024, "batch size of every forward-only pass (evaluation, methods)")
    mia_max_per_side: Count = opt(5000, "cap on members/non-members fitting the MIA classifier")
    confusion_matrix: bool = opt(False, "also write each model's test confusion matrix")
    plots: bool = opt(True, "write plots/per_class_accuracy.png and plots/mia_confidence.png")
    noise_floor: bool = opt(
        True, "also retrain with the next seed: the gap two exact retrainings show (the floor)"
    )
    representation: bool = opt(
        True,
        "penultimate-layer evidence: linear/k-NN probes (class forgetting) and linear CKA to "
        "the retrained model (cheap: a few seconds)",
    )
    representation_max_samples: Count = opt(
        5000, "cap on the test and forget images the representation figures use (fixed draw)"
    )
    lira: LiraOptions | None = opt(None, "evaluation=lira|ulira: the shadow models' settings")
    reference: Literal["retrain", "none"] = opt(
        "retrain",
        "retrain: judge against a model retrained without the forget set; none: no "
        "oracle, only what the original and unlearned models show (forget vs unseen data)",
    )


def no_rules(opts: EvaluationOptions) -> None:
    """evaluation=default: its schema says everything."""


def needs_shadow_settings(opts: EvaluationOptions, name: str = "lira") -> None:
    if opts.lira is None:
        raise UserError(f"evaluation={name} needs its evaluation.lira settings")


def needs_a_retrained_reference(opts: EvaluationOptions) -> None:
    needs_shadow_settings(opts, "ulira")
    if opts.reference == "none":
        raise UserError("evaluation=ulira tells the unlearned model from the retrained one; it "
                        "needs evaluation.reference=retrain (or use evaluation=lira)")  # fmt: skip


# Each evaluation preset (configs/evaluation/<name>.yaml), registered with its schema; the item
# is the preset's own rule across keys.
EVALUATIONS: Registry[Callable[[EvaluationOptions], None]] = Registry("evaluation")
EVALUATIONS.register("default", EvaluationOptions)(no_rules)
EVALUATIONS.register("lira", EvaluationOptions)(needs_shadow_settings)
EVALUATIONS.register("ulira", EvaluationOptions)(needs_a_retrained_reference)
