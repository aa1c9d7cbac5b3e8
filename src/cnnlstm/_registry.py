"""Small name → class tables with helpful errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A table from name to factory. Unknown names list every valid one; duplicates are errors."""

    def __init__(self, what: str):
        self.what = what
        self._table: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._table:
                raise ConfigError(f"{self.what} {name!r} is registered already")
            self._table[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._table[name]
        except KeyError:
            raise ConfigError(f"unknown {self.what} {name!r}: expected one of {', '.join(self._table)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self):
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def names(self) -> list[str]:
        return list(self._table)
