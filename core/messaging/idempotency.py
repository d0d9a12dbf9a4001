"""Exactly-once effects on top of at-least-once delivery.

A handler's work runs through `IdempotencyStore.run_once(event_id, handler, work)`: if the
pair was recorded before, the work is skipped. A durable store records the pair in the same
transaction as the work's own writes (the inbox, `core.messaging.inbox`): it calls
`work(session)` with that transaction's session, so a crash between the two cannot happen.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

Work = Callable[[Any], Awaitable[None]]
"""A handler's work; receives the store's transaction (a DB session), or None in memory."""


class IdempotencyStore(Protocol):
    """Runs each (event_id, handler) pair's work at most once to completion.

    Contract: if `work` raises, nothing is recorded and a later call runs it again. Two
    concurrent calls for the same pair never both run `work` to completion.
    """

    async def run_once(self, event_id: str, handler: str, work: Work) -> bool:
        """Run `work` unless already done for this pair; True if it ran now."""
        ...


class InMemoryIdempotencyStore:
    """A bounded, per-process store: remembers the latest `max_entries` pairs.

    Enough for one process's redeliveries (a duplicate produce, a replay, a retry after a
    failed commit); use a database-backed store where effects must survive a restart.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._done: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._max = max_entries

    def seen(self, event_id: str, handler: str) -> bool:
        return (event_id, handler) in self._done

    async def run_once(self, event_id: str, handler: str, work: Work) -> bool:
        key = (event_id, handler)
        if key in self._done:
            return False
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._done:
                return False
            await work(None)
            self._done[key] = None
            if len(self._done) > self._max:
                self._done.popitem(last=False)
        # Only once done: waiters re-check `_done`, newcomers never reach the lock. A failed
        # pair keeps its lock so a retry cannot race a concurrent duplicate.
        self._locks.pop(key, None)
        return True
