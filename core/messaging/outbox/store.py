"""The outbox's tables, and the operator's tools for rows Kafka refused for good.

`outbox_table(metadata)` / `lease_table(metadata)` add the tables to a service's own metadata
(in its schema, if it has one), so its Alembic history creates them and no table is shared
between services. `parked()`, `requeue()` and `discard()` act on parked rows: rows the relay
gave up on after `MAX_ATTEMPTS` permanent refusals. A parked row holds back every later row
of its topic and key until it is requeued (and published) or discarded; see
`core.messaging.outbox.relay`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    select,
    update,
)

from core.db.engine import Database

log = logging.getLogger(__name__)

OUTBOX = "outbox"
LEASE = "outbox_lease"
MAX_ATTEMPTS = 3
"""Permanent refusals after which a row is parked."""


def outbox_table(metadata: MetaData) -> Table:
    """The outbox table in `metadata` (created once, returned on later calls), in the
    metadata's schema if it has one."""
    return Table(
        OUTBOX,
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
               autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("topic", String(249), nullable=False),
        Column("key", String(255), nullable=True),
        Column("event_type", String(255), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSON, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("last_error", Text, nullable=True),
        Index("ix_outbox_pending", "id", postgresql_where=Column("published_at").is_(None),
              sqlite_where=Column("published_at").is_(None)),
        # The purge of published rows, every few seconds: an index range, not a table scan.
        Index("ix_outbox_published_at", "published_at"),
        # Rows that failed and still wait: each holds back the later rows of its topic and
        # key, and the relay asks this (tiny) index which keys are held.
        Index("ix_outbox_failing", "topic", "key", "id",
              postgresql_where=_failing(), sqlite_where=_failing()),
        keep_existing=True,  # a second call returns the table the first one made
    )


def _failing() -> Any:
    return and_(Column("published_at").is_(None), Column("attempts") > 0)


def lease_table(metadata: MetaData) -> Table:
    """One row per relay group: who may publish, and until when."""
    return Table(
        LEASE,
        metadata,
        Column("name", String(100), primary_key=True),
        Column("owner", String(255), nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=False),
        keep_existing=True,
    )


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An outbox row Kafka refused `attempts` times for good; `last_error` says why. `held`
    later rows of the same topic and key wait behind it."""

    id: int
    event_id: str
    topic: str
    key: str | None
    event_type: str
    attempts: int
    last_error: str
    created_at: datetime
    held: int


async def parked(
    db: Database, metadata: MetaData, *, max_attempts: int = MAX_ATTEMPTS
) -> list[ParkedEvent]:
    """The rows parked after `max_attempts` permanent refusals, oldest first."""
    t = outbox_table(metadata)
    later = t.alias("later")
    held = (select(func.count()).select_from(later)
            .where(later.c.published_at.is_(None), later.c.topic == t.c.topic,
                   later.c.key == t.c.key, later.c.id > t.c.id)
            .scalar_subquery())
    async with db.session() as session:
        rows = (await session.execute(
            select(t.c.id, t.c.event_id, t.c.topic, t.c.key, t.c.event_type, t.c.attempts,
                   t.c.last_error, t.c.created_at, held.label("held"))
            .where(t.c.published_at.is_(None), t.c.attempts >= max_attempts)
            .order_by(t.c.id))).all()
    return [ParkedEvent(r.id, r.event_id, r.topic, r.key, r.event_type, r.attempts,
                        r.last_error or "", aware(r.created_at), int(r.held or 0))
            for r in rows]


async def requeue(
    db: Database,
    metadata: MetaData,
    ids: Sequence[int] | None = None,
    *,
    max_attempts: int = MAX_ATTEMPTS,
) -> int:
    """Give parked rows (all, or those with `ids`) their attempts back, so the relay sends
    them again at its next poll, ahead of the rows they held back; returns how many."""
    t = outbox_table(metadata)
    where = [t.c.published_at.is_(None), t.c.attempts >= max_attempts]
    if ids is not None:
        where.append(t.c.id.in_(list(ids)))
    async with db.transaction() as session:
        result = await session.execute(update(t).where(*where).values(attempts=0))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def discard(
    db: Database,
    metadata: MetaData,
    ids: Sequence[int],
    *,
    max_attempts: int = MAX_ATTEMPTS,
) -> int:
    """Delete the parked rows with `ids` for good: their events are never published, and the
    rows they held back go out at the relay's next poll. Only parked rows can be discarded;
    returns how many were. The ids must be named: there is no "discard all"."""
    t = outbox_table(metadata)
    where = [t.c.published_at.is_(None), t.c.attempts >= max_attempts,
             t.c.id.in_(list(ids))]
    async with db.transaction() as session:
        gone = (await session.execute(
            delete(t).where(*where).returning(t.c.id, t.c.event_id, t.c.topic))).all()
    for row in gone:
        log.warning("outbox: parked row %d (event %s to %s) discarded, never to be published",
                    row.id, row.event_id, row.topic)
    return len(gone)


def aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; every time the outbox writes is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
