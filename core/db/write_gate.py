"""`WriteGate`: SQLite's one writer, queued in the process instead of in SQLite's busy handler.

SQLite lets one transaction write at a time. A writer that finds the lock taken sleeps in the
busy handler (1, 2, 5, 10, 15, 20, 25... ms, polling) and may lose the lock again to a writer
that arrives later: with four writers and the outbox relay in one process, a commit's wait
reached 190 ms at the 99th percentile (`make bench`, bench.outbox) while each holder kept the
lock about a millisecond. Nearly every writer of a service's file is in the service's own
process (its requests, its consumers' inbox, its outbox relay and leases), so the process can
queue them itself: a transaction takes the gate at its first write, where SQLite takes its
lock, and gives it back when its connection returns to the pool, after the COMMIT or
ROLLBACK; the next writer in line (first come, first served) is woken at once.

What does not change: reads never wait (WAL readers do not block the writer, nor it them);
a transaction that only reads never takes the gate; a writer that waited longer than the busy
timeout fails as SQLite would have failed it ("database is locked", which
`core.db.errors.unavailable` treats as transient). A writer the gate does not see (another
process, a statement it does not recognise as a write) still meets SQLite's lock and busy
handler, so the gate orders writers and never decides correctness. A transaction that writes
while the same task holds another's write lock deadlocked in SQLite before (and failed after
the timeout); it fails the same way here.
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import MutableMapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util.concurrency import await_only, in_greenlet

_HELD = "kfm.write_gate.held"
"""The pool entry's `info` key: the lock this connection holds, while it holds one."""
_GATE = "kfm.write_gate"
"""The pool entry's `info` key: the gate of the connection's database (`before_write`)."""
_READS = ("SELECT", "PRAGMA", "WITH", "EXPLAIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN")
"""Statements that do not take SQLite's write lock by themselves (a `WITH ... INSERT` is a
write counted as a read: it then waits in SQLite's busy handler, as every write did before)."""


class WriteGate:
    """One queue of writers per event loop (an `asyncio.Lock` belongs to one loop)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary())
        self.waits = 0
        """How many writers found the gate taken and queued (for tests and curiosity)."""

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    @property
    def held(self) -> bool:
        """Whether a connection holds the gate on the running loop."""
        return self._lock().locked()

    async def enter(self, info: MutableMapping[str, Any], statement: str = "") -> None:
        """Take the gate for the connection whose pool entry's `info` this is, unless it
        holds it already; wait in line at most `timeout` seconds."""
        if _HELD in info:
            return
        lock = self._lock()
        if lock.locked():
            self.waits += 1
        try:
            async with asyncio.timeout(self.timeout):
                await lock.acquire()
        except TimeoutError:
            raise OperationalError(statement, None, sqlite3.OperationalError(
                f"database is locked (another writer of this process held it for over "
                f"{self.timeout:g}s)")) from None
        info[_HELD] = lock

    @staticmethod
    def leave(info: MutableMapping[str, Any]) -> None:
        """Give the gate back if this connection holds it (its transaction has ended)."""
        lock = info.pop(_HELD, None)
        if lock is not None and lock.locked():
            lock.release()

    def install(self, engine: AsyncEngine) -> None:
        """Take the gate before every write statement SQLAlchemy sends on `engine`'s
        connections, and give it back whenever a connection goes back to the pool or is
        closed (committed, rolled back, invalidated: its transaction is over either way)."""
        sync = engine.sync_engine

        def connected(_: Any, record: ConnectionPoolEntry) -> None:
            record.info[_GATE] = self

        def before_cursor_execute(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip()[:9].upper().startswith(_READS):
                return
            info = conn.connection.info
            if _HELD not in info and in_greenlet():  # (sync use of the engine: SQLite alone)
                await_only(self.enter(info, statement))

        def released(_: Any, record: ConnectionPoolEntry | None, *__: Any) -> None:
            if record is not None:
                self.leave(record.info)

        event.listen(sync, "connect", connected)
        event.listen(sync, "before_cursor_execute", before_cursor_execute)
        for name in ("checkin", "invalidate", "soft_invalidate", "close", "detach"):
            event.listen(sync, name, released)


async def before_write(info: MutableMapping[str, Any], statement: str) -> None:
    """Take the gate for a write sent on the driver connection directly (`core.db.driver`),
    which SQLAlchemy's events do not see; `info` is the connection's pool entry's. Nothing
    happens for a connection without a gate (PostgreSQL)."""
    gate: WriteGate | None = info.get(_GATE)
    if gate is not None:
        await gate.enter(info, statement)
