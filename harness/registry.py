"""A name -> object registry with helpful misses, used for datasets, models and strategies."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def closest(name: str, choices: list[str]) -> str | None:
    """Return the closest known name to `name`, for "did you mean" hints."""
    matches = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


class Registry(Generic[T]):
    """Maps names to objects; duplicate names are rejected and a miss lists what exists."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering an object under `name`."""

        def decorate(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorate

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """Look up `name`; the KeyError message lists the known names and a close match."""
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(self.miss_message(name)) from None

    def miss_message(self, name: str) -> str:
        hint = closest(name, self.names())
        did_you_mean = f" Did you mean {hint!r}?" if hint else ""
        return f"unknown {self.kind} {name!r}.{did_you_mean} Known: {', '.join(self.names())}."
