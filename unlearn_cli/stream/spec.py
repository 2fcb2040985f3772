"""The `stream` node's schema (configs/stream/*.yaml): an ordered list of deletion requests.

A step takes the forget specs a single run takes (`forget_class`, `forget_fraction` with
`forget_within`, `forget_indices_file`), exactly one of them. The steps come from the preset's
YAML, from the command line (`stream.steps=[...]`) or from a file (`stream.file=steps.yaml` or
`steps.csv`), read and checked here, before any data is loaded.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml

from unlearn_cli.errors import UserError, first_line
from unlearn_cli.options import Count, Options, Range, opt, parse
from unlearn_cli.registry import Registry

ClassSpec = str | int | list[str | int] | None
Fraction = Annotated[float, Range(gt=0, lt=1)]
SPECS = ("forget_class", "forget_fraction", "forget_indices_file")


@dataclass(frozen=True)
class RequestStep(Options):
    """One deletion request of a stream."""

    forget_class: ClassSpec = opt(None, "a class name, an index, or a list of them")
    forget_fraction: Fraction | None = opt(
        None,
        "a random share of the training data the model has been given (the original's, plus "
        "any learned), drawn from the samples no earlier step forgot: random steps are disjoint",
    )
    forget_indices_file: str | None = opt(None, "a file of sample ids, as forget_indices_file")
    forget_within: str | int | None = opt(None, "with forget_fraction: the share of this class")
    learn: Fraction | None = opt(
        None,
        "a learn step instead of a request: this share of the training set arrives from the "
        "pool (stream.pool) and the model trains on it",
    )

    @property
    def is_learn(self) -> bool:
        return self.learn is not None

    @property
    def targets(self) -> str:
        """`class` or `samples`, as RunOptions.targets: it picks the method's defaults."""
        return "class" if self.forget_fraction is None and self.forget_indices_file is None \
            else "samples"  # fmt: skip

    def check(self, where: str) -> None:
        keys = (*SPECS, "learn")
        given = [k for k in keys if getattr(self, k) is not None]
        if not given:
            raise UserError(f"{where} is empty: give one of {', '.join(keys)}")
        if len(given) > 1:
            raise UserError(f"{where}: give only one of {', '.join(keys)} (got "
                            f"{' and '.join(given)})")  # fmt: skip
        if self.forget_within is not None and self.forget_fraction is None:
            raise UserError(f"{where}: forget_within restricts forget_fraction; give both")


@dataclass(frozen=True)
class StreamOptions(Options):
    steps: list[RequestStep] = opt([], "the deletion requests, in order")
    file: str | None = opt(None, "a YAML or CSV file of steps (instead of `steps`)")
    pool: Fraction | None = opt(
        None,
        "share of the training set held out of the original: the new data learn steps take in",
    )
    learn_epochs: Count = opt(
        2, "a learn step's passes over its new data, with the original's training recipe"
    )

    @property
    def active(self) -> bool:
        return bool(self.steps)

    @property
    def targets(self) -> str:
        """What the first request forgets (validate.py resolves the method's defaults with it)."""
        requests = [s for s in self.steps if not s.is_learn]
        return requests[0].targets if requests else "class"

    def check(self, where: str) -> None:
        if self.file is not None and self.steps:
            raise UserError(f"{where}: give steps or a file of steps, not both")
        self.check_learning(where)

    def check_learning(self, where: str) -> None:
        learning = [k for k, s in enumerate(self.steps, 1) if s.is_learn]
        if learning and self.pool is None:
            raise UserError(f"{where}: step {learning[0]} is a learn step but no data is held "
                            f"out to learn: set {where}.pool (e.g. 0.1)")  # fmt: skip
        if learning and learning[-1] == len(self.steps):
            raise UserError(f"{where}: the last step is a learn step; a stream ends with a "
                            "request (nothing after it would be judged)")  # fmt: skip

    def with_file_steps(self, where: str) -> StreamOptions:
        """These options with the steps of `file` read in (itself when there is no file)."""
        if self.file is None:
            return self
        rows = read_steps_file(Path(self.file).expanduser())
        steps = [parse(RequestStep, row, f"{where}.file step {k}", skip=())
                 for k, row in enumerate(rows, 1)]  # fmt: skip
        if not steps:
            raise UserError(f"{where}.file {self.file} holds no steps")
        with_steps = dataclasses.replace(self, steps=steps)
        with_steps.check_learning(where)
        return with_steps


def read_steps_file(path: Path) -> list[dict[str, Any]]:
    """A YAML list of steps (or a mapping with `steps:`), or a CSV with a header naming the
    step keys, one row a step and empty cells for the keys a step leaves out."""
    if not path.is_file():
        raise UserError(f"stream.file: no such file {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".csv":
            return [csv_step(row) for row in csv.DictReader(text.splitlines())]
        loaded = yaml.safe_load(text)
    except (UnicodeDecodeError, csv.Error, yaml.YAMLError) as exc:
        raise UserError(f"cannot read stream.file {path}: {first_line(exc)}") from None
    if isinstance(loaded, dict) and set(loaded) == {"steps"}:
        loaded = loaded["steps"]
    if not isinstance(loaded, list) or not all(isinstance(s, dict) for s in loaded):
        raise UserError(f"stream.file {path} must hold a list of steps (mappings such as "
                        "{forget_class: cat})")  # fmt: skip
    return loaded


def csv_step(row: dict[str, str | None]) -> dict[str, Any]:
    step: dict[str, Any] = {}
    for key, cell in row.items():
        text = (cell or "").strip()
        if key is None or not text:
            continue
        step[key.strip()] = float(text) if key.strip() == "forget_fraction" and is_float(text) \
            else text  # fmt: skip
    return step


def is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# Each stream preset (configs/stream/<name>.yaml) shares the schema; the item says what it is.
STREAMS: Registry[str] = Registry("stream")
STREAMS.register("none", StreamOptions)("no stream: one request (forget_* options)")
STREAMS.register("random4", StreamOptions)("4 disjoint requests of 2.5% of the training set")
STREAMS.register("classes3", StreamOptions)("3 classes (indices 0, 1, 2), one per request")
