"""Name -> implementation registries whose lookups fail with a "did you mean" message."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from unlearn_cli.errors import UserError

T = TypeVar("T")
OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True)
class Choice(Generic[OptionsT]):
    """A config group's pick: the name chosen from its registry (`method=ssd`) and its
    validated options.

    `as_written` keeps the options before per-scenario `auto` defaults were resolved (methods
    only; None elsewhere): what the user left to the defaults."""

    name: str
    options: OptionsT
    as_written: OptionsT | None = None

    def plain(self) -> dict[str, Any]:
        """The node as plain data, as its YAML spells it (cache keys, checkpoint metadata)."""
        return {"name": self.name, **dataclasses.asdict(self.options)}


def unknown_choice(kind: str, name: object, choices: Iterable[str]) -> UserError:
    """Build the error for a name that is not among `choices`, suggesting the closest ones."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(f"unknown {kind} '{name}'.{hint} Choose one of: {', '.join(choices)}")


class Registry(Generic[T]):
    """A small named table of implementations (methods, datasets, models, evaluations).

    Every config group links a name to its option schema by one rule (`schema`): the schema
    given at registration, else the annotation of the implementation's `opts` parameter.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self.options: dict[str, type] = {}

    def register(self, name: str, options: type | None = None) -> Callable[[T], T]:
        """Register an implementation, with the option schema of its config node if given."""

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = item
            if options is not None:
                self.options[name] = options
            return item

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise unknown_choice(self.kind, name, self._items)
        return self._items[name]

    def schema(self, name: str) -> type:
        """The option schema of `name`'s config node (see the class docstring)."""
        item = self.get(name)
        if name in self.options:
            return self.options[name]
        hints = typing.get_type_hints(inspect.unwrap(item))
        if "opts" not in hints:
            raise TypeError(f"{self.kind} {name} has no annotated `opts` parameter")
        return hints["opts"]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
