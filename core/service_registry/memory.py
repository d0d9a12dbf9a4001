"""The in-memory backend: a `LogRegistry` over a log kept in this process, for handler tests.

Same engine as the Kafka backend (`following.py`), so it ages, replays, tombstones and
watches the same way; only the transport differs. Registries sharing one `MemoryHub` see each
other, like processes sharing a Kafka topic. Never the evidence that the Kafka backend works.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from core.service_registry.base import RegistryError
from core.service_registry.following import LogRegistry
from core.service_registry.log import LogRecord


class MemoryHub:
    """An append-only log in memory, shared by the registries built on it. One event loop.

    `available = False` makes it behave like a broker that is away: writes and reads fail.
    """

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.available = True
        self._grown = asyncio.Event()

    async def append(self, key: str, value: bytes | None) -> None:
        if not self.available:
            raise RegistryError("the in-memory registry log is unavailable")
        self.records.append(LogRecord(key.encode(), value, int(time.time() * 1000)))
        self._grown.set()
        self._grown = asyncio.Event()

    async def wait_beyond(self, position: int, timeout: float) -> None:
        """Return once the log holds more than `position` records, or after `timeout`."""
        if len(self.records) > position:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._grown.wait()


class MemoryLog:
    """One reader's and writer's view of a `MemoryHub`."""

    def __init__(self, hub: MemoryHub, *, poll_timeout: float = 0.2) -> None:
        self.hub = hub
        self._position = 0
        self._end_at_open: int | None = None
        self._poll_timeout = poll_timeout

    @property
    def caught_up(self) -> bool:
        return self._end_at_open is not None and self._position >= self._end_at_open

    async def open(self, timeout: float) -> None:
        if not self.hub.available:
            raise RegistryError("the in-memory registry log is unavailable")
        self._position = 0
        self._end_at_open = len(self.hub.records)

    async def read(self) -> list[LogRecord]:
        if not self.hub.available:
            await asyncio.sleep(self._poll_timeout)
            raise RegistryError("the in-memory registry log is unavailable")
        await self.hub.wait_beyond(self._position, self._poll_timeout)
        batch = self.hub.records[self._position:]
        self._position += len(batch)
        return batch

    async def write(self, key: str, value: bytes | None) -> None:
        await self.hub.append(key, value)

    async def ping(self) -> None:
        if not self.hub.available:
            raise RegistryError("the in-memory registry log is unavailable")

    async def close(self) -> None:
        self._end_at_open = None


def memory_registry(
    hub: MemoryHub, *, ttl: float = 15.0, heartbeat_interval: float = 3.0,
    grace: float = 300.0,
) -> LogRegistry:
    """A registry on `hub`; build one per simulated process."""
    return LogRegistry(MemoryLog(hub), ttl=ttl, heartbeat_interval=heartbeat_interval,
                       grace=grace, catch_up_timeout=5.0)
