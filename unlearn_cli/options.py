"""Typed option schemas: every config node is declared once, as a frozen dataclass.

A schema field carries its type (int, float, bool, str, a `Literal` of choices, unions with None
or "auto", lists, nested schemas), its default (which the node's YAML file repeats for people to
read; a test proves the two agree), an optional range (`Range` inside `Annotated`) and a help
text. `parse(Schema, node, "method")` turns a composed config node into a schema instance or
raises one `UserError` line that names the key, what is allowed and the value given; a schema's
`check()` adds rules that involve several fields. Nothing is loaded or trained before every node
of a run has been parsed (see validate.py).

One concept, the schema language (declaring, parsing and describing an option), in one file: its
parts are only used together.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from omegaconf import DictConfig, ListConfig, OmegaConf

from unlearn_cli.errors import UserError


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ge/le inclusive, gt/lt exclusive."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    # Whether inf / -inf is a meaningful value of the field (e.g. "no limit"). No field says so
    # today: every option that can be switched off takes null. nan is never accepted.
    infinite: bool = False

    def holds(self, value: float) -> bool:
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def describe(self) -> str:
        if self.ge is not None and self.le is not None:
            return f"between {fmt(self.ge)} and {fmt(self.le)}"
        if self.gt is not None and self.lt is not None:
            return f"strictly between {fmt(self.gt)} and {fmt(self.lt)}"
        parts = [
            f"{op} {fmt(v)}"
            for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            if v is not None
        ]
        return " and ".join(parts)


def fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# The ranges most options share.
Count = Annotated[int, Range(ge=1)]  # a whole number >= 1 (epochs, sizes, steps)
Natural = Annotated[int, Range(ge=0)]  # a whole number >= 0
Positive = Annotated[float, Range(gt=0)]  # learning rates, scales
NonNegative = Annotated[float, Range(ge=0)]  # weights of loss terms, decay, clipping
Share = Annotated[float, Range(ge=0, le=1)]  # a convex weight or a share of something
Momentum = Annotated[float, Range(ge=0, lt=1)]
Optimizer = Literal["sgd", "adam", "adamw"]

T = TypeVar("T")
# A field whose default depends on what is forgotten (see `by_targets`): `auto` or a value.
Auto = Union[Literal["auto"], T]  # noqa: UP007 - a generic alias needs Union
# What a run forgets, as the methods see it: whole classes, or samples (a random share or an
# explicit forget list, which is judged like random samples).
TARGETS = ("class", "samples")


def opt(default: Any, help: str = "") -> Any:  # noqa: A002 - the natural name for a help text
    """A schema field with its default and the help text of the option tables (docs/methods.md)."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def by_targets(classes: Any, samples: Any, help: str = "", memorised: Any = None) -> Any:  # noqa: A002
    """A field (typed `Auto[...]`) whose default depends on what is forgotten: `classes` when a
    run forgets whole classes, `samples` when it forgets samples (a random share or a forget
    list). The YAML says `auto`; an explicit value applies to both. The two values were chosen
    by the tuning sweeps of docs/benchmark.md (configs/sweep/tune_<method>_<class|samples>.yaml).

    `memorised`, when given, replaces `samples` once the run finds that the original memorises
    its training data (unlearn_cli.methods.base.note_memorised_original): the benchmark's
    memorising variant, where the tuning seeds chose another value."""
    metadata = {"help": help, "by_targets": {"class": classes, "samples": samples}}
    if memorised is not None:
        metadata["memorised"] = memorised
    return dataclasses.field(default="auto", metadata=metadata)


def memorised_defaults(schema: type) -> dict[str, Any]:
    """{field: value} for the `by_targets` fields with a default for memorising originals."""
    return {f.name: f.metadata["memorised"] for f in fields_of(schema) if "memorised" in f.metadata}


def targets_defaults(schema: type) -> dict[str, dict[str, Any]]:
    """{field: {"class": value, "samples": value}} for the schema's `by_targets` fields."""
    return {
        f.name: f.metadata["by_targets"] for f in fields_of(schema) if "by_targets" in f.metadata
    }


@dataclass(frozen=True)
class Options:
    """Base of every schema. `renamed` maps a former key to the key that replaced it."""

    renamed: ClassVar[dict[str, str]] = {}
    # targets ("class" | "samples") -> why the method is not recommended there: on the tuning
    # seeds of docs/benchmark.md no setting of its grid beat doing nothing. Runs say so in
    # their log.
    unsuited: ClassVar[dict[str, str]] = {}
    # Why the samples defaults do not forget on an original that memorises its training data
    # (the benchmark's memorising variant, configs/sweep/memorise_samples.yaml); such runs say
    # so in their log (unlearn_cli.methods.base.note_memorised_original).
    unsuited_memorising: ClassVar[str] = ""

    def for_targets(self, targets: str, memorised: bool = False):
        """These options with every `auto` of a `by_targets` field replaced by its default for
        `targets` (for samples forgotten from a `memorised` original, its memorising default
        where it has one); explicit values are kept."""
        special = memorised_defaults(type(self)) if memorised and targets == "samples" else {}
        changes = {
            name: special.get(name, values[targets])
            for name, values in targets_defaults(type(self)).items()
            if getattr(self, name) == "auto"
        }
        return dataclasses.replace(self, **changes) if changes else self

    def has_auto(self) -> bool:
        """Whether a per-scenario field still says `auto` (resolved once the scenario is known)."""
        return any(getattr(self, name) == "auto" for name in targets_defaults(type(self)))

    def check(self, where: str) -> None:
        """Rules across several fields; raise `fail(...)` when one is broken."""

    def check_model(self, model: Any) -> None:
        """Rules that need the (untrained) model, checked before anything is trained."""

    def uses_torch_func(self) -> bool:
        """Whether the method calls torch.func (whose first call costs seconds of set-up that
        are warmed up before the timer starts)."""
        return False


def fail(where: str, key: str, rule: str, value: Any) -> UserError:
    return UserError(f"{qualified(where, key)} must be {rule}, got {value!r}")


def qualified(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def fields_of(schema: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(schema) if f.init]


def hints_of(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema, include_extras=True)


def plain(node: Any) -> Any:
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def parse(
    schema: type,
    node: Mapping | DictConfig | None,
    where: str,
    skip=("name",),
    targets: str | None = None,
    memorised: bool = False,
):
    """The schema instance for a config node; one UserError line for the first bad key.

    With `targets` ("class" | "samples"), `auto` values of `by_targets` fields become that
    scenario's defaults (see `Options.for_targets` for `memorised`) before the cross-field
    `check()`."""
    values = {k: plain(v) for k, v in (plain(node) or {}).items()}
    for key in skip:
        values.pop(key, None)
    hints = hints_of(schema)
    known = {f.name for f in fields_of(schema)}
    for key in values:
        if key not in known:
            raise unknown_option(schema, where, key, known)
    parsed = {}
    for f in fields_of(schema):
        if f.name in values:
            parsed[f.name] = coerce(hints[f.name], values[f.name], where, f.name)
    instance = schema(**parsed)
    if targets is not None:
        instance = instance.for_targets(targets, memorised)
    if not instance.has_auto():  # else run_method checks them once the split has resolved it
        instance.check(where)
    return instance


def unknown_option(schema: type, where: str, key: str, known) -> UserError:
    renamed = getattr(schema, "renamed", {})
    if key in renamed:
        return UserError(f"{qualified(where, key)} was renamed to "
                         f"{qualified(where, renamed[key])}")  # fmt: skip
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f" Did you mean '{qualified(where, close[0])}'?" if close else ""
    return UserError(f"unknown option '{qualified(where, key)}'.{hint}")


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def non_finite(value: Any) -> bool:
    """nan, inf or -inf, or a list holding one (Hydra parses `lr=nan` and `lr=inf` as floats)."""
    if isinstance(value, list | tuple):
        return any(non_finite(v) for v in value)
    return isinstance(value, float) and not math.isfinite(value)


def coerce(hint: Any, value: Any, where: str, key: str) -> Any:
    """`value` checked (and, for floats and lists, converted) against the type `hint`."""
    ok, result = accepts(hint, value, where, key)
    if not ok:
        error = fail(where, key, describe(hint), value)
        if non_finite(value):  # nan passes every "refuse if <= 0" test: say what is wrong
            what = "finite numbers" if isinstance(value, list | tuple) else "a finite number"
            error = fail(where, key, f"{what} ({describe(hint)})", value)
        words = [c for c in choices_of(hint) if isinstance(c, str)]
        close = difflib.get_close_matches(str(value), words, n=1, cutoff=0.6)
        if isinstance(value, str) and close:
            error = UserError(f"{error}. Did you mean '{close[0]}'?")
        raise error
    return result


def accepts(hint: Any, value: Any, where: str, key: str) -> tuple[bool, Any]:
    origin = get_origin(hint)
    if origin is Annotated:
        base, *extras = get_args(hint)
        bounds = [e for e in extras if isinstance(e, Range)]
        if (
            base is float
            and is_number(value)
            and math.isinf(value)
            and any(b.infinite for b in bounds)
        ):
            return all(b.holds(value) for b in bounds), float(value)
        ok, result = accepts(base, value, where, key)
        return ok and all(b.holds(result) for b in bounds), result
    if origin in (Union, types.UnionType):
        for arm in get_args(hint):
            ok, result = accepts(arm, value, where, key)
            if ok:
                return True, result
        return False, value
    if origin is Literal:
        # 1 == True in Python: compare types too, so `amp: 1` is not taken for `true`.
        return any(value == c and type(value) is type(c) for c in get_args(hint)), value
    if origin is list:
        (item,) = get_args(hint)
        if not isinstance(value, list | tuple):
            return False, value
        results = [accepts(item, v, where, key) for v in value]
        return all(ok for ok, _ in results), [r for _, r in results]
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return is_whole(value), value
    if hint is float:
        # nan compares false with every bound, so no range refuses it: refuse it (and infinity,
        # unless the field's Range declares it meaningful: see the Annotated arm) here.
        return is_number(value) and math.isfinite(value), float(value) if is_number(
            value
        ) else value
    if hint is str:
        # Hydra parses `dataset.root=2024` as a number: a name or path may be numeric.
        return isinstance(value, str) or is_number(value), str(value) if is_number(value) else value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            return False, value
        return True, parse(hint, value, qualified(where, key), skip=())
    raise TypeError(f"schema type {hint!r} of {qualified(where, key)} is not supported")


def describe(hint: Any) -> str:
    """What a value of type `hint` must be, in words: 'a whole number >= 1', 'one of a, b'."""
    origin = get_origin(hint)
    if origin is Annotated:
        base, *extras = get_args(hint)
        bounds = " ".join(e.describe() for e in extras if isinstance(e, Range))
        return f"{describe(base)} {bounds}".strip()
    if origin in (Union, types.UnionType):
        arms = [a for a in get_args(hint) if a is not type(None)]
        words = " or ".join(describe(a) for a in arms)
        return f"{words} or null" if len(arms) < len(get_args(hint)) else words
    if origin is Literal:
        choices = [choice_text(c) for c in get_args(hint)]
        return choices[0] if len(choices) == 1 else "one of " + ", ".join(choices)
    if origin is list:
        item = describe(get_args(hint)[0]).removeprefix("one of ").removeprefix("a ")
        return f"a list of {item}"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a name"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def choice_text(choice: Any) -> str:
    if isinstance(choice, bool):
        return str(choice).lower()
    return str(choice)


def defaults_of(schema: type) -> dict[str, Any]:
    """The schema's defaults as a plain dict (nested schemas as dicts)."""
    out = {}
    for f in fields_of(schema):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def choices_of(hint: Any) -> tuple:
    """The Literal choices inside a field's type (empty when it has none)."""
    origin = get_origin(hint)
    if origin is Literal:
        return get_args(hint)
    if origin in (Annotated, Union, types.UnionType, list):
        return tuple(c for arm in get_args(hint) for c in choices_of(arm))
    return ()


def range_of(hint: Any) -> Range | None:
    origin = get_origin(hint)
    if origin is Annotated:
        return next((e for e in get_args(hint)[1:] if isinstance(e, Range)), None)
    if origin in (Union, types.UnionType):
        return next((r for arm in get_args(hint) if (r := range_of(arm)) is not None), None)
    return None
