"""One service's database: an async SQLAlchemy engine and its sessions.

SQLite (a file, the embedded default) and PostgreSQL (asyncpg) are both first class. For
SQLite each connection gets WAL mode (readers do not block the writer), foreign keys on, and a
busy timeout, so several tasks and the outbox relay can share the file; `synchronous=NORMAL`
is SQLite's recommended setting for WAL: a commit survives a process crash (the tests kill
writers with SIGKILL), only an OS crash or power loss may drop the last commits, never corrupt.

A SQLite file holds secrets (password hashes, refresh tokens): it is created 0600 before
SQLite opens it, since SQLite would create it 0644 and gives its -wal and -shm files the mode
of the database file; a folder made for it is 0700 (see `_private_sqlite_file`).

A PostgreSQL connection is checked at checkout (see `_check_liveness`) instead of with
SQLAlchemy's `pool_pre_ping`, whose asyncpg ping is three round trips (begin, select,
rollback) on every checkout: more than the two inserts of an outbox transaction.

Reads (`reads()`) run without BEGIN/COMMIT: each statement is its own transaction (PostgreSQL
AUTOCOMMIT; on SQLite the driver opens no transaction before a SELECT). Under PostgreSQL's READ
COMMITTED a transaction gives its statements no common snapshot anyway, so the two round trips
bought nothing; a reader that needs one snapshot across statements asks for `snapshot()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy import orm as sa_orm
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

log = logging.getLogger(__name__)
_BEGIN = text("BEGIN")
SQLITE_BUSY_TIMEOUT_MS = 10_000
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
POOL_SIZE = 15
"""Connections per process at most (SQLAlchemy's default capacity), opened as needed."""
PING_AFTER_IDLE = 2.0
"""Seconds a pooled PostgreSQL connection may sit idle before its next checkout pings it."""


class Database:
    """Engine plus session factory. Build one per process, in `create_service`, and share it.

    `transaction()` is the unit of work: everything written through the session, state
    changes and outbox rows alike, commits together or not at all.
    """

    def __init__(self, url: str, *, echo: bool = False, **engine_options: Any) -> None:
        self.url = make_url(url)
        if (self.dialect != "sqlite" and "poolclass" not in engine_options
                and "pool_size" not in engine_options
                and "max_overflow" not in engine_options):
            # SQLAlchemy's default (5, overflow 10) closes each connection past the fifth as
            # it comes back, so any load above 5 requests at once opened and closed a
            # connection per request. The same 15 at most, kept once opened, as asyncpg's
            # own pool keeps them.
            engine_options.update(pool_size=POOL_SIZE, max_overflow=0)
        if self.dialect == "sqlite":
            engine_options.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            _private_sqlite_file(self.url.database, self.url.query)
        self.engine: AsyncEngine = create_async_engine(url, echo=echo, **engine_options)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            _skip_idle_rollback(self.engine)
        elif "pool_pre_ping" not in engine_options:
            _check_liveness(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # One pool for all three: the execution options only change how a checked-out
        # connection begins (asyncpg applies them without a round trip).
        self.read_sessions = async_sessionmaker(
            self.engine if self.dialect == "sqlite"
            else self.engine.execution_options(isolation_level="AUTOCOMMIT"),
            expire_on_commit=False, sync_session_class=ReadOnlySession)
        self.snapshot_sessions = async_sessionmaker(
            self.engine if self.dialect == "sqlite" else self.engine.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True),
            expire_on_commit=False, sync_session_class=ReadOnlySession)

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
        """A session inside one transaction: committed on exit, rolled back on error.

        What `sessions.begin()` does, in one trip into SQLAlchemy's greenlet instead of three:
        the begin touches no connection (the first statement checks one out), so it runs
        here; the commit (or rollback) and the close run together, shielded from
        cancellation as SQLAlchemy shields them. Each trip was ~5 % of an outbox commit.
        """
        session = self.sessions()
        transaction = session.sync_session.begin()
        transaction.__enter__()
        try:
            yield session
        except BaseException as exc:
            await _to_completion(session.run_sync(_end, transaction, exc))
            raise
        await _to_completion(session.run_sync(_end, transaction, None))

    @asynccontextmanager
    async def reads(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only, with no BEGIN or COMMIT: each statement sees what was
        committed when it started. A write through it raises ReadOnlySessionError (it would
        otherwise commit statement by statement, or not at all)."""
        async with self.read_sessions() as session:
            yield session

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncSession]:
        """A read-only session whose statements all see one snapshot of the database (what
        was committed when its first statement ran): PostgreSQL REPEATABLE READ READ ONLY; on
        SQLite an explicit BEGIN (in WAL mode a read transaction is a snapshot)."""
        async with self.snapshot_sessions() as session:
            if self.dialect == "sqlite":
                # the driver begins only before a write: begin now, the SELECT pins the snapshot
                await session.execute(_BEGIN)
            try:
                yield session
            finally:
                await session.rollback()

    async def dispose(self) -> None:
        await self.engine.dispose()


def _end(session: Session, transaction: SessionTransaction, exc: BaseException | None) -> None:
    """Commit `transaction` (roll it back after `exc`), then close `session`, as the exit of
    `async with sessions.begin()` does."""
    try:
        if exc is None:
            transaction.__exit__(None, None, None)
        else:
            transaction.__exit__(type(exc), exc, exc.__traceback__)
    finally:
        session.close()


async def _to_completion(ending: Coroutine[Any, Any, None]) -> None:
    """Await `ending` in a task of its own, to its end even if the caller is cancelled
    meanwhile (then re-raise the cancellation): a commit or close abandoned halfway would
    return its connection to the pool mid-transaction."""
    task = asyncio.ensure_future(ending)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as err:
            if task.done():
                raise
            cancelled = err
        else:
            break
    if cancelled is not None:
        raise cancelled


def _private_sqlite_file(database: str | None, query: Any) -> None:
    """Create the database file 0600 (whatever the umask adds) if it is not there yet, in a
    folder made 0700 if that is missing too (a first run needs no setup: the default
    `DATABASE_URL` names a file in `.local/`), and take group and other access away from one
    an earlier version created 0644, with its WAL and shared-memory files. In-memory databases
    and URI filenames are left to SQLite; so is a folder that cannot be made (SQLite's own
    error says so)."""
    if not database or database == ":memory:" or query.get("uri") or database.startswith(
            "file:"):
        return
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(database) or ".", mode=PRIVATE_DIR_MODE, exist_ok=True)
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        pass
    except OSError:
        return
    else:
        os.close(fd)
        return
    for path in (database, f"{database}-wal", f"{database}-shm"):
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                os.chmod(path, mode & 0o700)
                log.warning("%s was readable by others (mode %o); now %o", path, mode,
                            mode & 0o700)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("%s is readable by others and cannot be made private: %s", path, exc)


def _check_liveness(engine: AsyncEngine) -> None:
    """Hand out no dead connection, as `pool_pre_ping` would, at a fraction of its cost.

    A connection the server closed (a restart, a terminated backend) is known to the driver
    without a round trip: the event loop saw the socket close while it sat in the pool. Only
    a connection idle for `PING_AFTER_IDLE` seconds or more, which a network could have cut
    silently, is pinged. Either way a dead one is replaced by a fresh one (DisconnectionError
    makes the pool retry), so the caller never sees it.
    """
    sync = engine.sync_engine

    def checked_in(_: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: ConnectionPoolEntry,
                    proxy: PoolProxiedConnection) -> None:
        driver = proxy.driver_connection
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the server closed the connection")
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE:
            return  # fresh, or in use a moment ago
        try:
            sync.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"ping failed: {exc}") from exc

    event.listen(sync, "checkin", checked_in)
    event.listen(sync, "checkout", checked_out)


def _skip_idle_rollback(engine: AsyncEngine) -> None:
    """The pool rolls back every connection it takes back, even one whose transaction was
    just committed; on aiosqlite that no-op is a trip to the connection's thread and back. The
    driver knows, without the trip, whether a transaction is open: roll back only then."""
    dialect = engine.sync_engine.dialect
    rollback = dialect.do_rollback

    def do_rollback(dbapi_connection: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and getattr(driver, "in_transaction", True) is False:
            return
        rollback(dbapi_connection)

    dialect.do_rollback = do_rollback  # type: ignore[method-assign]


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


class ReadOnlySessionError(RuntimeError):
    """A write through a session that was opened for reads (no transaction to keep it in)."""


class ReadOnlySession(sa_orm.Session):
    """The sync session behind `Database.reads()` and `snapshot()`: refuses INSERT, UPDATE and
    DELETE statements and flushes of changed objects, so a write cannot commit piecemeal
    (PostgreSQL autocommit) or vanish at close (SQLite). Raw SQL text is not inspected."""


def _refuse_writes(state: sa_orm.ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise ReadOnlySessionError(
            "a write through a read-only session: use Database.transaction() (a GET or HEAD "
            "route that must write asks for core.bases.deps.TransactionDep)")


def _refuse_flush(session: sa_orm.Session, *_: Any) -> None:
    if session.new or session.deleted or any(session.is_modified(o) for o in session.dirty):
        raise ReadOnlySessionError(
            "a flush of changed objects through a read-only session: use "
            "Database.transaction() (a GET or HEAD route that must write asks for "
            "core.bases.deps.TransactionDep)")


event.listen(ReadOnlySession, "do_orm_execute", _refuse_writes)
event.listen(ReadOnlySession, "before_flush", _refuse_flush)
