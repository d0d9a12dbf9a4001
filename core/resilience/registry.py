"""One guard per key (a breaker per upstream instance, a bulkhead per upstream service), made
on first use, with a bounded number of keys.

Keys come from outside (instances appear and vanish with deployments), so the registry must
not grow without bound: past `max_size` it forgets the least recently used entry that is
`idle` (no call in flight, nothing learned worth keeping), or the least recently used one if
none is. A forgotten guard still works for whoever holds it; the next `get` makes a fresh one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _always_idle(_: object) -> bool:
    return True


class KeyedRegistry(Generic[K, V]):
    """`registry.get(key)` returns the guard of `key`, calling `factory(key)` the first time."""

    def __init__(self, factory: Callable[[K], V], *, max_size: int = 1024,
                 idle: Callable[[V], bool] = _always_idle) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self._factory = factory
        self._idle = idle
        self.max_size = max_size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._factory(key)
            if len(self._entries) > self.max_size:
                self._evict(key)
        else:
            self._entries.move_to_end(key)
        return entry

    def peek(self, key: K) -> V | None:
        """The guard of `key` if there is one, without making it or marking it used."""
        return self._entries.get(key)

    def _evict(self, keep: K) -> None:
        victim = next((k for k, v in self._entries.items() if k != keep and self._idle(v)),
                      next(iter(self._entries)))
        del self._entries[victim]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))
