"""A bulkhead: at most `limit` calls in flight to one dependency, and a short, bounded queue.

One slow dependency must not take every connection, task and socket of the caller with it.
When all slots are busy a call waits, but only if fewer than `max_waiters` already wait, and
for at most `max_wait` seconds; otherwise it fails at once with `BulkheadFullError`, which the
caller can answer (503) while the queue stays short.

Waiters are served first come, first served: a freed slot is handed to the oldest waiter
directly (the count of calls in flight does not drop and rise again), so a newcomer cannot
overtake the queue. A waiter cancelled or timed out after being handed a slot passes it on.
Task safety: one event loop; nothing awaits while holding the bookkeeping.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from types import TracebackType

from core.resilience.errors import BulkheadFullError


class Bulkhead:
    """`async with bulkhead:` runs the block in one of `limit` slots, or raises
    `BulkheadFullError` without running it."""

    def __init__(self, name: str, limit: int, *, max_waiters: int = 0,
                 max_wait: float = 0.0) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if max_waiters < 0 or max_wait < 0:
            raise ValueError("max_waiters and max_wait must be >= 0")
        self.name = name
        self.limit = limit
        self.max_waiters = max_waiters
        self.max_wait = max_wait
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_use(self) -> int:
        """Slots held right now (calls in flight)."""
        return self._in_use

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def idle(self) -> bool:
        return self._in_use == 0 and not self._waiters

    def try_acquire(self) -> bool:
        """Take a free slot at once if there is one (nobody waiting), without waiting."""
        if self._in_use < self.limit and not self._waiters:
            self._in_use += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot (waiting within the bounds) or raise `BulkheadFullError`."""
        if self.try_acquire():
            return
        if len(self._waiters) >= self.max_waiters or self.max_wait <= 0:
            raise BulkheadFullError(self.name, self.limit, 0.0)
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.max_wait):
                await slot
        except BaseException as exc:
            if slot.done() and not slot.cancelled():
                self.release()  # handed a slot in the same instant: pass it on
            elif slot in self._waiters:  # a release may already have dropped it
                self._waiters.remove(slot)
            if isinstance(exc, TimeoutError):
                raise BulkheadFullError(self.name, self.limit,
                                        time.monotonic() - started) from None
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter if any, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        if self._in_use <= 0:
            raise RuntimeError(f"bulkhead {self.name!r} released more than acquired")
        self._in_use -= 1

    async def __aenter__(self) -> Bulkhead:
        await self.acquire()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
