"""A small named registry: the one shape shared by tasks, model kinds, checkpoint schedules,
metrics and figures.

Registering a name twice is a programming error (``ValueError``); asking for an unknown name is a
user error (:class:`ProbeError` listing the valid names). Registries hold plain objects and import
nothing themselves.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from probe.errors import ProbeError, valid

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> entries, in registration order. ``what`` names the kind in error messages."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def wrap(item: T) -> T:
            return self.add(name, item)

        return wrap

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ProbeError(f"unknown {self.what} {name!r}{valid(self.names())}")
        return self._items[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
