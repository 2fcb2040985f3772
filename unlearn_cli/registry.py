"""Name -> implementation registries whose lookups fail with a "did you mean" message."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from unlearn_cli.errors import UserError

T = TypeVar("T")


def unknown_choice(kind: str, name: object, choices: Iterable[str]) -> UserError:
    """Build the error for a name that is not among `choices`, suggesting the closest ones."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(f"unknown {kind} '{name}'.{hint} Choose one of: {', '.join(choices)}")


class Registry(Generic[T]):
    """A small named table of implementations (methods, datasets, models)."""

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

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
