"""nan and inf never pass the option checks (issue 39): `lr=nan` passes "refuse if <= 0" and
`inf` is greater than anything, so the refusal lives in the shared option layer, not in each
range. The cases are generated from the registered schemas, so a new float option is covered (and
this test fails for it) without anyone adding it to a list.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Annotated, Any, Union, get_args, get_origin

import pytest

from unlearn_cli.data.builders import DATASETS
from unlearn_cli.errors import UserError
from unlearn_cli.evaluation.options import EvaluationOptions
from unlearn_cli.methods import METHODS, options_type
from unlearn_cli.models.builders import MODELS, model_options_type
from unlearn_cli.options import Options, Range, fields_of, hints_of, parse
from unlearn_cli.validate import RunOptions

from .test_bad_inputs import assert_clean_failure


def registered_schemas() -> list[tuple[str, type]]:
    """(where, schema) of every option node a run parses: the top-level keys, each dataset,
    model and method, and the evaluation."""
    schemas = [("", RunOptions), ("evaluation", EvaluationOptions)]
    schemas += [(f"dataset[{n}]", DATASETS.options[n]) for n in DATASETS.names()]
    schemas += [(f"model[{n}]", model_options_type(n)) for n in MODELS.names()]
    schemas += [(f"method[{n}]", options_type(n)) for n in METHODS.names()]
    return schemas


def arms(hint: Any) -> list[Any]:
    """The alternatives of a field's type, Annotated kept on each (Optional, `auto`, unions)."""
    if get_origin(hint) in (Union, types.UnionType):
        return [a for arm in get_args(hint) for a in arms(arm)]
    return [hint]


def float_arm(hint: Any) -> Any | None:
    for arm in arms(hint):
        base = get_args(arm)[0] if get_origin(arm) is Annotated else arm
        if base is float or (get_origin(base) is list and float_arm(get_args(base)[0])):
            return arm
    return None


def nested_schema(hint: Any) -> type | None:
    return next((a for a in arms(hint) if dataclasses.is_dataclass(a)), None)


def float_fields(schema: type, path: tuple[str, ...] = ()):
    """(path, the float arm of its type) of every field that takes a float, nested ones too."""
    for f in fields_of(schema):
        hint = hints_of(schema)[f.name]
        if (inner := nested_schema(hint)) is not None:
            yield from float_fields(inner, (*path, f.name))
        elif (arm := float_arm(hint)) is not None:
            yield (*path, f.name), arm


def allows_infinity(arm: Any) -> bool:
    extras = get_args(arm)[1:] if get_origin(arm) is Annotated else ()
    return any(isinstance(e, Range) and e.infinite for e in extras)


def node_for(path: tuple[str, ...], value: Any, is_list: bool) -> dict:
    leaf: Any = [value] if is_list else value
    for key in reversed(path):
        leaf = {key: leaf}
    return leaf


CASES = [
    pytest.param(where, schema, path, arm, id=f"{where or 'run'}.{'.'.join(path)}")
    for where, schema in registered_schemas()
    for path, arm in float_fields(schema)
]


def test_the_generated_cases_cover_the_float_options_we_know():
    ids = {c.id for c in CASES}
    for known in ("run.validation_fraction", "run.forget_fraction",
                  "model[cnn].train.lr", "method[negative_gradient].lr",
                  "method[scrub].temperature", "method[salun].lr"):  # fmt: skip
        assert known in ids
    assert len(CASES) > 40


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("where", "schema", "path", "arm"), CASES)
def test_every_float_option_refuses_non_finite_numbers(where, schema, path, arm, value):
    """One line naming the option, the value and what is allowed; infinity only where the
    field's Range declares it meaningful (none does today)."""
    base = get_args(arm)[0] if get_origin(arm) is Annotated else arm
    is_list = get_origin(base) is list
    node = node_for(path, value, is_list)
    if math.isinf(value) and allows_infinity(arm):
        parse(schema, node, "x", skip=())  # accepted, as declared
        return
    with pytest.raises(UserError) as caught:
        parse(schema, node, "x", skip=())
    message = str(caught.value)
    assert "\n" not in message
    finite = "finite numbers" if is_list else "a finite number"
    assert f"x.{'.'.join(path)} must be {finite}" in message, message
    assert repr(value) in message


def test_a_declared_infinite_range_takes_infinity_but_never_nan():
    @dataclasses.dataclass(frozen=True)
    class Limits(Options):
        budget: Annotated[float, Range(gt=0, infinite=True)] = 1.0

    assert parse(Limits, {"budget": math.inf}, "x", skip=()).budget == math.inf
    for bad in (math.nan, -math.inf, 0.0):
        with pytest.raises(UserError):
            parse(Limits, {"budget": bad}, "x", skip=())


# The commands of issue 39: each used to load data or train (minutes) before failing.
COMMANDS = [
    ["model.train.lr=nan"],
    ["validation_fraction=nan"],
    ["method=negative_gradient", "method.lr=nan"],
    ["method=salun", "method.lr=nan"],
    ["method=scrub", "method.temperature=inf"],
    ["method=negative_gradient", "method.lr=inf"],
    ["-m", "method=negative_gradient", "method.lr=0.01,nan"],  # any value of a sweep
    ["-m", "method=negative_gradient", "method.lr=nan,0.01"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_non_finite_commands_fail_in_one_line_before_any_work(unlearn_here, tmp_path, args):
    code, _, err = unlearn_here("run", *args)
    assert code == 2
    assert_clean_failure(code, err, "must be a finite number", tmp_path)
    assert not (tmp_path / "outputs" / "cache" / "data").exists()  # no dataset was loaded


def test_schema_walk_sees_through_optional_and_auto():
    """The walk must find floats behind `auto |` and `| None`, or the cases above shrink."""

    @dataclasses.dataclass(frozen=True)
    class Probe:
        a: typing.Literal["auto"] | Annotated[float, Range(gt=0)] = "auto"
        b: float | None = None
        c: list[float] = dataclasses.field(default_factory=list)
        d: int = 1

    assert [p for p, _ in float_fields(Probe)] == [("a",), ("b",), ("c",)]
