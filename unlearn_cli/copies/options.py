"""The `request` node (configs/config.yaml): what a run does about copies of its request, and
the benchmark's planted copies (docs/copies.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from unlearn_cli.errors import UserError
from unlearn_cli.options import Count, Options, Range, opt

SCANS = ("exact", "pixels", "phash", "features", "rows")
AUGMENTATIONS = ("flip", "shift", "brightness", "jpeg", "noise")
Scan = Literal["exact", "pixels", "phash", "features", "rows"]
Augmentation = Literal["flip", "shift", "brightness", "jpeg", "noise"]


@dataclass(frozen=True)
class PlantOptions(Options):
    """`request.plant`: near-copies planted in the training set (the copies benchmark)."""

    share: Annotated[float, Range(gt=0, le=1)] | None = opt(
        None,
        "share of the request's samples (of a class request: of its class's images) that get "
        "planted copies in the retain set; null plants none",
    )
    max_copies: Annotated[int, Range(ge=1, le=10)] = opt(
        3, "each chosen sample gets 1 to this many copies"
    )
    augmentations: list[Augmentation] = opt(
        list(AUGMENTATIONS),
        "how a copy differs from its sample, one drawn per copy: flip (mirror), shift (1-2 "
        "pixels), brightness (+-10%), jpeg (quality 75), noise (Gaussian, sigma 2% of the range)",
    )

    def check(self, where: str) -> None:
        if not self.augmentations:
            raise UserError(f"{where}.augmentations is empty: name at least one of "
                            f"{', '.join(AUGMENTATIONS)}")  # fmt: skip


@dataclass(frozen=True)
class RequestOptions(Options):
    """`request`: the copy scan of every request, before any unlearning."""

    copies: Literal["report", "extend", "refuse", "off"] = opt(
        "report",
        "copies of the request in the retain set: report them (copies.csv), extend the request "
        "to them, refuse the request (exit 2), or do not scan",
    )
    scan: Literal["auto"] | list[Scan] = opt(
        "auto",
        "the scans: exact (hash of the decoded sample), pixels (pixel correlation after "
        "centring on the centre of mass, images), phash (perceptual hash, images), features "
        "(the original's penultimate features), rows (normalised distance, tables); auto = "
        "every one that applies",
    )
    phash_distance: Annotated[int, Range(ge=0, le=64)] = opt(
        1,
        "a near-copy by pHash: Hamming distance of the 64-bit hashes at most this (imagededup "
        "uses 10, which calls most of animal_mnist copies of each other: docs/copies.md)",
    )
    pixel_similarity: Annotated[float, Range(gt=0, le=1)] = opt(
        0.98, "a near-copy by pixels: correlation of the centred images at least this"
    )
    feature_similarity: Annotated[float, Range(gt=0, le=1)] = opt(
        0.997,
        "a near-copy by features: cosine similarity of penultimate features at least this "
        "(imagededup uses 0.9, far too loose for a classifier's features: docs/copies.md)",
    )
    row_distance: Annotated[float, Range(ge=0)] = opt(
        0.05,
        "a near-copy of a table row: Euclidean distance of the standardised rows over "
        "sqrt(features) at most this",
    )
    hidden_confidence: Annotated[float, Range(gt=0, le=1)] = opt(
        0.99,
        "class requests: retain samples of other labels that the original gives the forgotten "
        "class with at least this probability are reported as hidden members",
    )
    max_pairs: Count = opt(
        20_000, "copies.csv keeps at most this many pairs (the counts cover every pair)"
    )
    plant: PlantOptions = field(
        default_factory=PlantOptions, metadata={"help": "planted copies (the copies benchmark)"}
    )

    @property
    def active(self) -> bool:
        return self.copies != "off"

    def scans_for(self, is_image: bool, has_features: bool) -> tuple[str, ...]:
        """The scans this run makes: the ones asked for, or (auto) every one that applies."""
        if self.scan == "auto":
            wanted = ["exact", "pixels", "phash"] if is_image else ["exact", "rows"]
            return tuple(wanted + (["features"] if has_features else []))
        return tuple(dict.fromkeys(self.scan))

    def check(self, where: str) -> None:
        if self.scan != "auto" and not self.scan:
            raise UserError(f"{where}.scan is empty: give auto or some of {', '.join(SCANS)}")
