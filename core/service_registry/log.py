"""`RegistryLog`: the transport under `LogRegistry`, a compacted log keyed by instance id.

Kafka's `platform.registry` topic is the real one (`kafka.py`); `memory.py` keeps the same
semantics in one process for handler tests. Both run under the same `LogRegistry`, so the
aging, catch-up and tombstone rules cannot differ between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record as a reader gets it; `timestamp_ms` is the log's (the broker's append time
    for Kafka), None when the log has none."""

    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None


class RegistryLog(Protocol):
    """Writes land in order per key; every reader reads every record from the beginning.

    `open` raises `RegistryError` when the log cannot be reached within `timeout` seconds;
    `write` raises `RegistryError` when the write is not acknowledged; `read` may raise any
    exception for a failed read, which the reader logs and retries.
    """

    @property
    def caught_up(self) -> bool:
        """Every record the log held when it was opened has been returned by `read`."""
        ...

    async def open(self, timeout: float) -> None: ...

    async def read(self) -> list[LogRecord]:
        """The next records, oldest first per key; [] after a short wait when none came."""
        ...

    async def write(self, key: str, value: bytes | None) -> None: ...

    async def ping(self) -> None:
        """Return when the log answers; raise when it does not."""
        ...

    async def close(self) -> None: ...
