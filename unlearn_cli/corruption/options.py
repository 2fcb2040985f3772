"""The `corruption` node (configs/config.yaml; presets `variant=poison|confusion`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from unlearn_cli.errors import UserError
from unlearn_cli.options import Count, Options, Range, opt


@dataclass(frozen=True)
class CorruptionOptions(Options):
    """Manipulated training data and the share of it a request names (corrective unlearning)."""

    kind: Literal["none", "poison", "confusion"] = opt(
        "none",
        "poison: BadNets, a patch trigger and the target label on some samples; confusion: the "
        "labels of part of two classes swapped (Goel et al., TMLR 2024); none: clean data",
    )
    share: Annotated[float, Range(gt=0, le=0.5)] = opt(
        0.01, "the manipulated samples, as a share of the training rows"
    )
    identified: Annotated[float, Range(gt=0, le=1)] = opt(
        0.5,
        "the share of the manipulated samples the request names (random among them, seeded); "
        "the rest stay in the retain set",
    )
    target: str | int = opt(0, "poison: the label the trigger points to (a class name or index)")
    patch: Count = opt(3, "poison: the trigger's side in pixels, at the maximum pixel value, "
                          "bottom-right")  # fmt: skip
    classes: Literal["auto"] | list[str | int] = opt(
        "auto",
        "confusion: the two classes whose labels are swapped; auto = the pair the clean "
        "original confuses most on the validation split",
    )

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def check(self, where: str) -> None:
        if self.classes != "auto" and len(self.classes) != 2:
            raise UserError(f"{where}.classes names two classes, got {len(self.classes)}")
