"""Which instance takes the next call: the one with the fewest calls in flight from us.

Least outstanding requests rather than round robin: round robin keeps sending one call in N to
an instance that has become slow (a long GC pause, a noisy neighbour), and those calls pile up
there; counting what is still in flight sends fewer to it at once, with no latency bookkeeping.
Ties (all idle, the usual case at low load) are broken by rotating the starting point, so equal
instances take turns exactly as with round robin.

Task safety: one event loop, no awaits; `started`/`finished` must pair up (the client calls
`finished` in a `finally`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


class LeastOutstanding:
    def __init__(self) -> None:
        self._in_flight: dict[Hashable, int] = {}
        self._turn = 0

    def pick(self, candidates: Sequence[T], key: Callable[[T], Hashable]) -> T:
        """The candidate with the fewest calls in flight; among equals, the next in turn."""
        if not candidates:
            raise ValueError("no candidates to pick from")
        self._turn += 1
        count = len(candidates)
        best = candidates[self._turn % count]
        best_load = self.in_flight(key(best))
        for offset in range(1, count):
            candidate = candidates[(self._turn + offset) % count]
            load = self.in_flight(key(candidate))
            if load < best_load:
                best, best_load = candidate, load
        return best

    def in_flight(self, key: Hashable) -> int:
        return self._in_flight.get(key, 0)

    def started(self, key: Hashable) -> None:
        self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def finished(self, key: Hashable) -> None:
        left = self._in_flight.get(key, 0) - 1
        if left > 0:
            self._in_flight[key] = left
        else:  # forget idle instances: the map stays as small as what is in flight
            self._in_flight.pop(key, None)

    def __len__(self) -> int:
        return len(self._in_flight)
