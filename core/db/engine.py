"""One service's database: an async SQLAlchemy engine and its sessions.

SQLite (a file, the embedded default) and PostgreSQL (asyncpg) are both first class. For
SQLite each connection gets WAL mode (readers do not block the writer), foreign keys on, and a
busy timeout, so several tasks and the outbox relay can share the file; `synchronous=NORMAL`
is SQLite's recommended setting for WAL: a commit survives a process crash (the tests kill
writers with SIGKILL), only an OS crash or power loss may drop the last commits, never corrupt.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 10_000


class Database:
    """Engine plus session factory. Build one per process, in `create_service`, and share it.

    `transaction()` is the unit of work: everything written through the session, state
    changes and outbox rows alike, commits together or not at all.
    """

    def __init__(self, url: str, *, echo: bool = False, **engine_options: Any) -> None:
        self.url = make_url(url)
        if self.dialect == "sqlite":
            engine_options.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        else:
            engine_options.setdefault("pool_pre_ping", True)
        self.engine: AsyncEngine = create_async_engine(url, echo=echo, **engine_options)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def pool_capacity(self) -> int:
        """How many connections the pool hands out at most (size plus overflow)."""
        pool = self.engine.sync_engine.pool
        size = pool.size() if hasattr(pool, "size") else 1
        return max(1, int(size) + max(0, int(getattr(pool, "_max_overflow", 0))))

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session without an implicit commit: for reads, or for callers that commit."""
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on exit, rolled back on error."""
        async with self.sessions.begin() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _enable_wal(cursor: Any, attempts: int = 50) -> None:
    """Switch the file to WAL. Connections opening a fresh file together can get "database is
    locked" at once (SQLite skips the busy handler there to avoid a deadlock); by the retry
    the file is usually WAL already and the pragma is a no-op. Rare, short, and only at
    connect, so the brief blocking sleep is acceptable."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
