"""finetune: keep training on the retain set only and let catastrophic forgetting do the rest.

loss = CE(retain batch), for `retain_epochs` passes over the retain set (the standard baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from unlearn_cli.data.split import ForgetSplit
from unlearn_cli.methods.base import METHODS, UnlearnContext
from unlearn_cli.methods.step_loop import StepLoopOptions, retain_finetune
from unlearn_cli.options import Auto, Count, Positive, by_targets, opt


@dataclass(frozen=True)
class FinetuneOptions(StepLoopOptions):
    renamed = {"epochs": "retain_epochs"}
    unsuited = {
        "class": "on the tuning seeds no setting forgets the class without wrecking the model "
        "(configs/sweep/tune_finetune_class.yaml): lr 0.04 forgets it at RA 65 / 54 (full / "
        "memorising; retrain 98.6 / 100), lr 0.02 leaves it 25-30% recognised on the full "
        "variant while costing 10-18 points of retain accuracy on the memorising one, and lower "
        "rates do not forget it (UA 7-57)",
    }
    unsuited_memorising = (
        "fine-tuning on the retain set does not make memorised samples unseen: UA 0.8 at its "
        "1 retain pass (retrain 9.0) on the tuning seeds (configs/sweep/tune_finetune_samples."
        "yaml), 1.6 at 2 passes (which cost 9 points of validation accuracy), 1.5 at 10 "
        "(configs/sweep/memorise_samples.yaml)"
    )
    # 1: the pick of configs/sweep/tune_finetune_samples.yaml on both variants (2 passes cost 9
    # points of validation accuracy on a memorising tuning seed); a class is unsuited anyway.
    retain_epochs: Count = opt(1, "passes over the retain set")
    batch_size: Count = opt(128, "mini-batch size")
    # Class: 0.04, the lowest lr of the grid that forgot the class on every tuning seed (0.02
    # left it recognised on one); samples: 0.01 (0.02 is worse than doing nothing).
    lr: Auto[Positive] = by_targets(0.04, 0.01, "learning rate (cosine-annealed to 0)")


@METHODS.register("finetune")
def finetune(
    model: nn.Module, split: ForgetSplit, ctx: UnlearnContext, opts: FinetuneOptions
) -> nn.Module:
    return retain_finetune(model, split, ctx, opts, "finetune")
