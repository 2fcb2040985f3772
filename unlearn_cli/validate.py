"""Every node of a composed config, parsed into its typed schema before any data or model.

`validate_config(cfg)` returns the run's typed options (`RunConfig`) or raises one `UserError`
line naming the first bad key. It is called once per job, at the edge where Hydra hands over the
composed config; everything after takes the `RunConfig` (a variant of a run is
`dataclasses.replace`, never a re-parse). The schemas live beside what they configure: methods in
their own modules, models in models/builders.py, datasets in data/builders.py, `model.train` in
training.py, the evaluation in evaluation/options.py and the top-level keys here. Each of the four
groups links a name to its schema by one rule: `Registry.schema`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from unlearn_cli.copies.options import RequestOptions
from unlearn_cli.corruption.options import CorruptionOptions
from unlearn_cli.data.builders import DATASETS
from unlearn_cli.errors import UserError
from unlearn_cli.evaluation.options import EVALUATIONS, EvaluationOptions
from unlearn_cli.methods import METHODS
from unlearn_cli.models.builders import MODELS, ModelOptions
from unlearn_cli.models.state_files import check_suffix
from unlearn_cli.options import Count, Natural, Options, Range, opt, parse
from unlearn_cli.registry import Choice, Registry
from unlearn_cli.stream.spec import SPECS, STREAMS, ClassSpec, Fraction, StreamOptions
from unlearn_cli.tracking.options import LoggerOptions

NODES = ("dataset", "model", "method", "evaluation", "stream")
GROUPS: dict[str, Registry[Any]] = {"dataset": DATASETS, "model": MODELS, "method": METHODS,
                                    "evaluation": EVALUATIONS, "stream": STREAMS}  # fmt: skip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OriginalOptions(Options):
    """`original`: where the model to unlearn comes from."""

    checkpoint: str | None = opt(
        None,
        "unlearn this trained model instead of training one: our .safetensors or a plain "
        "state dict (.pt/.pth)",
    )

    def check(self, where: str) -> None:
        if self.checkpoint is not None:
            path = Path(self.checkpoint).expanduser()
            check_suffix(path, f"{where}.checkpoint")
            if not path.is_file():
                raise UserError(f"{where}.checkpoint: no such file {path}")


@dataclass(frozen=True)
class RunOptions(Options):
    """The top-level keys of configs/config.yaml."""

    forget_class: ClassSpec = opt(None, "a class name (elephant), an index (5), or a list")
    forget_fraction: Fraction | None = opt(None, "a random share of the training set")
    forget_indices_file: str | None = opt(None, "a deletion request: a file of sample ids")
    forget_within: str | int | None = opt(None, "with forget_fraction: the share of this class")
    validation_fraction: Annotated[float, Range(gt=0, lt=0.5)] = opt(
        0.05, "training samples held out from every model, for the methods' own choices"
    )
    seed: Natural = opt(0, "model init, shuffling, random forget sets, the method's randomness")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    threads: Literal["auto"] | Count = opt("auto", "CPU threads for torch")
    cache_dir: str = opt("outputs/cache", "trained models and dataset arrays, shared by all runs")
    original: OriginalOptions = field(
        default_factory=OriginalOptions, metadata={"help": "the model to unlearn"}
    )
    request: RequestOptions = field(
        default_factory=RequestOptions,
        metadata={"help": "the copy scan of the request (docs/copies.md)"},
    )
    corruption: CorruptionOptions = field(
        default_factory=CorruptionOptions,
        metadata={"help": "manipulated training data and a partial request (docs/corrective.md)"},
    )
    logger: LoggerOptions = field(
        default_factory=LoggerOptions,
        metadata={"help": "the trackers the run is sent to when it ends (docs/tracking.md)"},
    )

    @property
    def targets(self) -> str:
        """What the run forgets: `class` (forget_class, or the dataset's default class) or
        `samples` (a random share, a forget list, or the manipulated samples a corrective
        request names); it picks per-scenario method defaults."""
        samples = self.forget_fraction is not None or self.forget_indices_file is not None
        return "samples" if samples or self.corruption.active else "class"

    def check(self, where: str) -> None:
        given = [k for k in ("forget_class", "forget_fraction", "forget_indices_file")
                 if getattr(self, k) is not None]  # fmt: skip
        if self.corruption.active and given:
            kind, dropped = self.corruption.kind, " and ".join(given)
            raise UserError(f"corruption.kind={kind} makes its own request (the identified "
                            f"manipulated samples); drop {dropped}")  # fmt: skip
        if self.corruption.active and self.original.checkpoint is not None:
            raise UserError("corruption trains its own manipulated original; drop "
                            "original.checkpoint")  # fmt: skip
        if self.corruption.active and self.request.plant.share is not None:
            raise UserError("request.plant and corruption both change the training data; "
                            "give one")  # fmt: skip
        if len(given) > 1:
            raise UserError("give only one of forget_class, forget_fraction, "
                            f"forget_indices_file (got {' and '.join(given)})")  # fmt: skip
        if self.forget_within is not None and self.forget_fraction is None:
            raise UserError("forget_within restricts forget_fraction; give forget_fraction with it")


@dataclass(frozen=True)
class RunConfig:
    """The typed options of one run: the top-level keys, and each group's name and options."""

    run: RunOptions
    dataset: Choice[Options]
    model: Choice[ModelOptions]
    method: Choice[Options]
    evaluation: Choice[EvaluationOptions]
    # No steps (stream=none): one request, the forget_* options.
    stream: Choice[StreamOptions] = Choice("none", StreamOptions())

    def plain(self) -> dict[str, Any]:
        """The whole config as plain data in its YAML's shape (metrics.json's config_hash)."""
        groups = {g: getattr(self, g).plain() for g in NODES}
        run = dataclasses.asdict(self.run)
        run.pop("logger")  # where a run is reported does not change it
        return {**run, **groups}


def validate_config(cfg: Mapping) -> RunConfig:
    """Parse every node of the composed config `cfg`; raise UserError with one clear line for
    the first problem."""
    run = parse(RunOptions, {k: v for k, v in cfg.items() if k not in NODES}, "", skip=())
    stream = choose("stream", cfg.get("stream") or {"name": "none"})
    # A stream's method takes each step's defaults (stream/run.py); its first step's here.
    targets = stream.options.targets if stream.options.active else run.targets
    config = RunConfig(
        run=run,
        dataset=choose("dataset", cfg["dataset"]),
        model=choose("model", cfg["model"]),
        method=choose("method", cfg["method"], targets),
        evaluation=choose("evaluation", cfg["evaluation"]),
        stream=stream,
    )
    if stream.options.active:
        given = [k for k in (*SPECS, "forget_within") if getattr(run, k) is not None]
        if given:
            raise UserError(f"stream={config.stream.name} gives its own requests; drop "
                            f"{' and '.join(given)} (or put them in a step)")  # fmt: skip
        if stream.options.pool is not None and run.original.checkpoint is not None:
            raise UserError(
                "stream.pool holds data out of the original's training, but "
                "original.checkpoint was trained elsewhere (on any sample)"
            )
        if config.evaluation.options.lira is not None:
            raise UserError(
                f"evaluation={config.evaluation.name} is not run on streams yet "
                "(its shadow models forget one request); use evaluation=default"
            )
        if run.corruption.active:
            raise UserError("corruption applies to a single request; drop stream")
        if run.request.copies == "extend" or run.request.plant.share is not None:
            raise UserError(
                "request.copies=extend and request.plant apply to single requests; a stream's "
                "requests are scanned and reported, or refused (request.copies=report|refuse|off)"
            )
    check_writable(Path(run.cache_dir), "cache_dir", read_only_ok=True)
    return config


def choose(group: str, node: Mapping, targets: str | None = None) -> Choice:
    """The group's pick for config node `node`: its `name` picks the schema (`Registry.schema`).

    A method's `auto` options become the defaults for `targets` ("class" | "samples"); the
    options as written are kept beside them. An evaluation preset adds its own rule."""
    name = str(node["name"])
    options = parse(GROUPS[group].schema(name), node, group)
    if group == "stream":
        options = options.with_file_steps(group)
    if group == "evaluation":
        EVALUATIONS.get(name)(options)
    if group != "method" or targets is None:
        return Choice(name, options)
    resolved = options.for_targets(targets)
    if resolved is not options and not resolved.has_auto():
        resolved.check(group)
    return Choice(name, resolved, as_written=options)


def method_defaults(name: str, targets: str) -> Choice:
    """Method `name` with its schema's defaults (which its YAML repeats) for `targets`."""
    return choose("method", {"name": name}, targets)


def check_writable(folder: Path, key: str, read_only_ok: bool = False) -> None:
    """`folder` exists (created if need be) and a file can be written in it.

    With `read_only_ok` an existing folder that cannot be written (a team's shared cache) is
    only a warning: what is in it is used, nothing new is stored.
    """
    if read_only_ok and folder.is_dir() and not os.access(folder, os.W_OK):
        log.warning("%s=%s is read-only: models cached there are used, new ones are not "
                    "stored", key, folder)  # fmt: skip
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test."):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"{key}={folder} cannot be written to ({reason})") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"{key}={folder} cannot be written to (permission denied)")
