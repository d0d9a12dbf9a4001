"""The inbox: the consumer's idempotency store on the service's own database.

`(event_id, handler)` is inserted in the same transaction as the handler's writes (the
handler receives that transaction as `ctx.session`). Redelivery of an event whose row exists
skips the handler; a crash before commit leaves neither the row nor the effects, so the
redelivery does the work once. Two concurrent deliveries of one event race on the primary
key: the second waits for the first transaction and then skips (or runs, if it rolled back).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, MetaData, String, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core.db.engine import Database
from core.db.models import table_key
from core.messaging.idempotency import Work

INBOX = "inbox"


def inbox_table(metadata: MetaData) -> Table:
    """The inbox table in `metadata` (created once, returned on later calls), in the
    metadata's schema if it has one."""
    existing = metadata.tables.get(table_key(metadata, INBOX))
    if existing is not None:
        return existing
    return Table(
        INBOX,
        metadata,
        Column("event_id", String(36), primary_key=True),
        Column("handler", String(255), primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )


class DatabaseIdempotencyStore:
    """`IdempotencyStore` on the service's database, for exactly-once effects across restarts."""

    def __init__(self, db: Database, metadata: MetaData) -> None:
        self.db = db
        self.table = inbox_table(metadata)
        dialect_insert = pg_insert if db.dialect == "postgresql" else sqlite_insert
        self._claim = dialect_insert(self.table).on_conflict_do_nothing()

    async def run_once(self, event_id: str, handler: str, work: Work) -> bool:
        async with self.db.transaction() as session:
            claimed = await session.execute(
                self._claim.values(event_id=event_id, handler=handler,
                                   processed_at=datetime.now(UTC)))
            if not claimed.rowcount:  # type: ignore[attr-defined]
                return False
            await work(session)
        return True

    async def seen(self, event_id: str, handler: str) -> bool:
        t = self.table
        async with self.db.session() as session:
            found = await session.scalar(
                select(t.c.event_id).where(t.c.event_id == event_id, t.c.handler == handler))
        return found is not None
