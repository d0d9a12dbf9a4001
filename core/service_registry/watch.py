"""`watch` for every backend: the current state first, then one `Change` per change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from core.service_registry.base import Change, Instance

Snapshot = Callable[[], Mapping[str, Sequence[Instance]]]
"""The live instances of every service known now."""


class Watchers:
    """Hands each change to every open `watch` iterator. One event loop.

    A watcher that falls behind does not slow the backend: its queue only keeps the latest
    instances per service (a watcher wants the state, not every step on the way to it).
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._queues: list[_Latest] = []

    def publish(self, changes: Mapping[str, Sequence[Instance]]) -> None:
        """Tell every watcher that these services now have these live instances."""
        for queue in self._queues:
            for service, instances in changes.items():
                queue.put(Change(service, tuple(instances)))

    async def watch(self, service: str | None) -> AsyncIterator[Change]:
        queue = _Latest(service)
        self._queues.append(queue)
        try:
            state = self._snapshot()
            names = [service] if service is not None else sorted(state)
            last: dict[str, tuple[Instance, ...]] = {}
            for name in names:
                last[name] = tuple(state.get(name, ()))
                yield Change(name, last[name])
            while True:
                change = await queue.get()
                if last.get(change.service, ()) != change.instances:
                    last[change.service] = change.instances
                    yield change
        finally:
            self._queues.remove(queue)


class _Latest:
    """A queue of changes for one watcher that keeps only the newest per service."""

    def __init__(self, service: str | None) -> None:
        self._service = service
        self._pending: dict[str, Change] = {}
        self._ready = asyncio.Event()

    def put(self, change: Change) -> None:
        if self._service is None or change.service == self._service:
            self._pending.pop(change.service, None)  # re-inserted last: oldest pending first
            self._pending[change.service] = change
            self._ready.set()

    async def get(self) -> Change:
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        service = next(iter(self._pending))
        return self._pending.pop(service)
