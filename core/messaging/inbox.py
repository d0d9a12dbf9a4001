"""The inbox: the consumer's idempotency store on the service's own database.

`(event_id, handler)` is inserted in the same transaction as the handler's writes (the
handler receives that transaction as `ctx.session`). Redelivery of an event whose row exists
skips the handler; a crash before commit leaves neither the row nor the effects, so the
redelivery does the work once. Two concurrent deliveries of one event race on the primary
key: the second waits for the first transaction and then skips (or runs, if it rolled back).

Only writes made through `ctx.session` are exactly-once. An effect elsewhere (an HTTP call, an
email, another database) happens at least once: it may repeat if the process dies between the
effect and the commit. The store warns once per handler that never writes through the session.

Each handler holds a pooled connection and an open transaction while it runs, so the store
runs at most `max_concurrency` handlers at a time: half the pool on PostgreSQL (the rest
stays for requests and the outbox relay), one on SQLite (a claim holds SQLite's single write
lock until commit; more would only queue on the lock and time out). A database that cannot
serve (down, no free connection, the file locked) raises `StoreUnavailableError`: the
dispatcher waits it out without spending the handler's attempts or dead-lettering the event.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, select
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from core.db.driver import DRIVER_WRITES, DriverInsert
from core.db.engine import Database
from core.db.errors import unavailable
from core.messaging.errors import StoreUnavailableError
from core.messaging.idempotency import Work

log = logging.getLogger(__name__)
_EXECUTES = "inbox.executes"

INBOX = "inbox"


def inbox_table(metadata: MetaData) -> Table:
    """The inbox table in `metadata` (created once, returned on later calls), in the
    metadata's schema if it has one."""
    return Table(
        INBOX,
        metadata,
        Column("event_id", String(36), primary_key=True),
        Column("handler", String(255), primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False),
        keep_existing=True,  # a second call returns the table the first one made
    )


class DatabaseIdempotencyStore:
    """`IdempotencyStore` on the service's database, for exactly-once effects across restarts."""

    def __init__(
        self, db: Database, metadata: MetaData, *, max_concurrency: int | None = None
    ) -> None:
        self.db = db
        self.table = inbox_table(metadata)
        dialect_insert = pg_insert if db.dialect == "postgresql" else sqlite_insert
        self._claim = dialect_insert(self.table).on_conflict_do_nothing()
        # On SQLite the claim goes out on the driver connection (`core.db.driver`): one hop to
        # the connection's thread instead of three while the file's write lock is taken. On
        # PostgreSQL it is the transaction's first statement, which SQLAlchemy must send (it
        # begins the transaction with it), so it goes through SQLAlchemy as before.
        self._driver = (DriverInsert(self.table, ("event_id", "handler", "processed_at"),
                                     db.engine.sync_engine.dialect, self._claim)
                        if db.dialect == "sqlite" and isinstance(db, Database) else None)
        if max_concurrency is None:
            max_concurrency = 1 if db.dialect == "sqlite" else max(1, db.pool_capacity // 2)
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._warned: set[str] = set()
        if not sa_event.contains(Session, "do_orm_execute", _count_execute):
            sa_event.listen(Session, "do_orm_execute", _count_execute)

    async def run_once(self, event_id: str, handler: str, work: Work) -> bool:
        work_error: BaseException | None = None
        async with self._slots:
            try:
                async with self.db.transaction() as session:
                    row = {"event_id": event_id, "handler": handler,
                           "processed_at": datetime.now(UTC)}
                    if self._driver is not None:
                        claimed = await self._driver.execute(session, row)
                    else:
                        result = await session.execute(self._claim.values(**row))
                        claimed = result.rowcount  # type: ignore[attr-defined]
                    if not claimed:
                        return False
                    try:
                        await work(session)
                    except Exception as exc:
                        work_error = exc
                        raise
                    if handler not in self._warned and not _wrote(session):
                        self._warned.add(handler)
                        log.warning(
                            "handler %s wrote nothing through ctx.session: its effects "
                            "elsewhere are at-least-once, not exactly-once", handler)
            except Exception as exc:
                # The handler's own failure (its HTTP call refused: an OSError) is its to
                # retry and dead-letter; only the database failing, even under the handler's
                # writes through the session, is waited out.
                ours = exc is not work_error or isinstance(exc, SQLAlchemyError)
                if ours and unavailable(exc):
                    raise StoreUnavailableError(f"inbox database: {exc}") from exc
                raise
        return True

    async def seen(self, event_id: str, handler: str) -> bool:
        """Whether the pair is recorded (for tests and tools; `run_once` does not need it)."""
        t = self.table
        async with self.db.session() as session:
            found = await session.scalar(
                select(t.c.event_id).where(t.c.event_id == event_id, t.c.handler == handler))
        return found is not None


def _count_execute(state: Any) -> None:
    info = state.session.info
    info[_EXECUTES] = info.get(_EXECUTES, 0) + 1


def _wrote(session: AsyncSession) -> bool:
    """Whether the handler used the session beyond the inbox's own claim (which went through
    SQLAlchemy or the driver: either way one statement)."""
    sync = session.sync_session
    statements = sync.info.get(_EXECUTES, 0) + sync.info.get(DRIVER_WRITES, 0)
    return statements > 1 or bool(sync.new or sync.dirty or sync.deleted)
