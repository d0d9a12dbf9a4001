"""What the harness needs from a contender: a producer and a consumer, driven the same way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

OnMessage = Callable[[int, int], None]
"""Called by a contender's handler for every decoded record: (seq, sent_ns)."""


class Contender(Protocol):
    """One client library (or framework) under test, configured like all the others:
    acks=all, idempotent producer where supported, linger 5 ms, no compression."""

    key: str
    """Short name used in topic names, JSON and ratio headers."""
    label: str
    """Display name."""
    notes: str
    """Anything about its settings a reader of the table should know."""

    async def start_producer(self) -> None: ...

    async def stop_producer(self) -> None: ...

    async def publish_all(self, topic: str, count: int) -> None:
        """Publish `count` records (seq 0..count-1), pipelined the way this client's users
        would; return once the broker acknowledged every one of them."""
        ...

    async def send(self, topic: str, seq: int) -> Awaitable[object]:
        """Start publishing one record stamped with the current time, without waiting for
        its acknowledgement; the returned awaitable completes on acknowledgement."""
        ...

    async def start_consumer(self, topic: str, group: str, on_message: OnMessage) -> None:
        """Join `group` on `topic` (from the earliest offset) and call `on_message` from a
        trivial handler that decoded each record; returns without waiting for assignment."""
        ...

    async def stop_consumer(self) -> None: ...
