"""A name → object registry that refuses duplicates and answers unknown names with the known ones.

Used for methods, models, ω maps, forget regimes and metrics (docs/design.md §10): adding an entry is one
decorated definition, never an ``if name == ...`` chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """``registry.register(name, obj)``, ``registry[name]``, iteration over names in sorted order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        return obj

    def __getitem__(self, name: str) -> T:
        if name not in self._items:
            raise ConfigError(self.kind, name, f"one of {sorted(self._items)}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def values(self) -> list[T]:
        """The registered objects in registration order."""
        return list(self._items.values())
