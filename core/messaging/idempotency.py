"""Exactly-once effects on top of at-least-once delivery.

A handler's work runs through `IdempotencyStore.run_once(event_id, handler, work)`: if the
pair was recorded before, the work is skipped. A durable store records the pair in the same
transaction as the work's own writes (the inbox, `core.messaging.inbox`): it calls
`work(session)` with that transaction's session, so a crash between the two cannot happen.
"""

from __future__ import annotations

import asyncio
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
    Hot path: two dict look-ups and an insert; an `asyncio.Event` is made only when a
    duplicate arrives while the first delivery is still running.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._done: dict[tuple[str, str], None] = {}
        self._running: dict[tuple[str, str], asyncio.Event | None] = {}
        self._max = max_entries

    def seen(self, event_id: str, handler: str) -> bool:
        return (event_id, handler) in self._done

    async def run_once(self, event_id: str, handler: str, work: Work) -> bool:
        key = (event_id, handler)
        while key in self._running:  # a duplicate is running right now: wait for it
            waiter = self._running[key]
            if waiter is None:
                waiter = self._running[key] = asyncio.Event()
            await waiter.wait()
        if not self.claim(key):  # nothing runs it now (the loop saw to that): done already?
            return False
        done = False
        try:
            await work(None)
            done = True
        finally:
            self.settle(key, done)
        return True

    def claim(self, key: tuple[str, str]) -> bool | None:
        """`run_once`'s first step without a coroutine or a work closure, for the dispatcher's
        hot path: True when the (event_id, handler) pair is now running here (run it, then
        `settle`), False when it is done already, None when a duplicate is running right now
        (call `run_once`, which waits for it)."""
        if key in self._running:
            return None
        if key in self._done:
            return False
        self._running[key] = None
        return True

    def settle(self, key: tuple[str, str], done: bool) -> None:
        """End a run that `claim` began: recorded when `done`, else free to run again."""
        if done:
            self._done[key] = None
            if len(self._done) > self._max:
                del self._done[next(iter(self._done))]  # dicts keep insertion order
        waiter = self._running.pop(key)
        if waiter is not None:
            waiter.set()
