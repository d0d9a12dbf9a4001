"""Transactional outbox: an event is a row written in the same transaction as the state change
it describes; a relay publishes pending rows to Kafka and marks them sent.

- `outbox_table(metadata)` / `lease_table(metadata)` add the tables to a service's own
  metadata, so its Alembic history creates them and no table is shared between services.
- `OutboxWriter.add(session, topic, event)` inserts the row through the caller's session;
  after that session commits, in-process relays are woken at once (no poll delay).
- `OutboxRelay` publishes in id order, pipelined through the idempotent producer, so events
  with the same key reach Kafka in commit order. Several instances of a service may each run
  a relay: a lease row elects one publisher at a time, renewed in the background while it
  lives; if it dies, another takes over once the lease expires.

Delivery is at-least-once: a relay that dies after Kafka acknowledged a batch but before it
marked the rows sent publishes them again after restart; consumers' inbox absorbs the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

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
    insert,
    select,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Delete

from core.db.engine import Database
from core.db.models import table_key
from core.messaging.events import BaseEvent
from core.messaging.exceptions import PublishError
from core.messaging.kafka_client import DeliveryReport, KafkaProducer
from core.messaging.serialization import EventSerializer

log = logging.getLogger(__name__)

OUTBOX = "outbox"
LEASE = "outbox_lease"
MAX_ATTEMPTS = 3
"""Permanent refusals after which a row is parked."""


def outbox_table(metadata: MetaData) -> Table:
    """The outbox table in `metadata` (created once, returned on later calls), in the
    metadata's schema if it has one."""
    existing = metadata.tables.get(table_key(metadata, OUTBOX))
    if existing is not None:
        return existing
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
    )


def _failing() -> Any:
    return and_(Column("published_at").is_(None), Column("attempts") > 0)


def lease_table(metadata: MetaData) -> Table:
    """One row per relay group: who may publish, and until when."""
    existing = metadata.tables.get(table_key(metadata, LEASE))
    if existing is not None:
        return existing
    return Table(
        LEASE,
        metadata,
        Column("name", String(100), primary_key=True),
        Column("owner", String(255), nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=False),
    )


def _now() -> datetime:
    return datetime.now(UTC)


class OutboxWriter:
    """Adds events to the outbox inside the caller's transaction. Stateless per call.

    `service_name` stamps the envelope of every event that does not name its origin, so
    consumers see who emitted it without each call site setting it.
    """

    def __init__(
        self, metadata: MetaData, serializer: EventSerializer, *, service_name: str = ""
    ) -> None:
        self.table = outbox_table(metadata)
        self.service_name = service_name
        self._serializer = serializer
        self._on_commit: list[Callable[[], None]] = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` after any transaction that added events commits."""
        self._on_commit.append(callback)

    async def add(
        self,
        session: AsyncSession,
        topic: str,
        event: BaseEvent[Any],
        *,
        key: str | None = None,
    ) -> None:
        if not event.service_name and self.service_name:
            event = event.model_copy(update={"service_name": self.service_name})
        value, headers = self._serializer.serialize(event)
        await session.execute(insert(self.table).values(
            event_id=str(event.event_id),
            topic=topic,
            key=key if key is not None else event.partition_key(),
            event_type=event.EVENT_TYPE,
            payload=value,
            headers=[[name, raw.decode()] for name, raw in headers],
            created_at=_now(),
            attempts=0,
        ))
        sync = session.sync_session
        if self._on_commit and not sync.info.get("outbox_wakeup"):
            sync.info["outbox_wakeup"] = True
            sa_event.listen(sync, "after_commit", self._committed, once=True)

    def _committed(self, session: Any) -> None:
        session.info.pop("outbox_wakeup", None)
        for callback in self._on_commit:
            callback()


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An outbox row Kafka refused `attempts` times for good; `last_error` says why."""

    id: int
    event_id: str
    topic: str
    event_type: str
    attempts: int
    last_error: str
    created_at: datetime


class OutboxMetrics(Protocol):
    """Where the relay reports; a Prometheus adapter implements it in core.metrics."""

    def published(self, count: int, latencies: Sequence[float]) -> None: ...

    def backlog(self, count: int) -> None: ...


class OutboxRelay:
    """Publishes pending outbox rows to Kafka. Start one per process; the lease decides which
    process's relay actually publishes.

    A row Kafka refuses for good (too large, invalid topic, not authorized) is parked after
    `max_attempts` tries: left unpublished, logged, and skipped, so it cannot hold up the rows
    behind it. This module's `parked()` lists such rows and `requeue()` sends them again once
    the cause is fixed. Failures that heal (the broker away) never count toward parking.
    """

    def __init__(
        self,
        db: Database,
        producer: KafkaProducer,
        metadata: MetaData,
        *,
        owner: str,
        name: str = "default",
        batch_size: int = 500,
        poll_interval: float = 0.5,
        lease_ttl: float = 10.0,
        retention: timedelta = timedelta(days=1),
        max_attempts: int = MAX_ATTEMPTS,
        metrics: OutboxMetrics | None = None,
    ) -> None:
        self.db = db
        self.producer = producer
        self.table = outbox_table(metadata)
        self.lease = lease_table(metadata)
        self.owner = owner
        self.name = name
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lease_ttl = lease_ttl
        self.retention = retention
        self.max_attempts = max_attempts
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._holding = False
        self._held_until = 0.0  # monotonic: a paused process stops trusting a lapsed lease
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.published_total = 0

    def notify(self) -> None:
        """Wake the relay now (called after a commit that added events)."""
        self._wake.set()

    @property
    def holds_lease(self) -> bool:
        """Whether this relay may start a batch: it won the lease, and by its own monotonic clock
        the lease is not about to lapse (a process paused past the TTL must renew first)."""
        # The last third of the TTL is a margin for the batch in flight to finish in.
        return self._holding and time.monotonic() < self._held_until - self.lease_ttl / 3

    async def start(self) -> None:
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._keep_lease(), name=f"outbox-lease:{self.owner}"),
            asyncio.create_task(self._run(), name=f"outbox-relay:{self.owner}"),
        ]

    async def stop(self) -> None:
        """Finish the batch in flight, give the lease back, stop."""
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._holding:
            await self._release_lease()

    async def _run(self) -> None:
        last_housekeeping = 0.0
        while not self._stopping:
            try:
                published = await self.publish_batch() if self.holds_lease else 0
                if time.monotonic() - last_housekeeping > 5.0 and self.holds_lease:
                    last_housekeeping = time.monotonic()
                    await self._housekeeping()
                if published < self.batch_size:
                    await self._idle(self.poll_interval if self._holding else self.lease_ttl / 3)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay %s failed; retrying", self.owner)
                await self._idle(1.0)

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def publish_batch(self) -> int:
        """Publish up to `batch_size` pending rows in id order; returns how many were sent.

        Call directly only where no other relay runs (tests, benchmarks); `start()` otherwise.
        """
        t = self.table
        async with self.db.session() as session:
            rows = (await session.execute(
                select(t.c.id, t.c.topic, t.c.key, t.c.payload, t.c.headers, t.c.created_at,
                       t.c.attempts)
                .where(t.c.published_at.is_(None), t.c.attempts < self.max_attempts)
                .order_by(t.c.id).limit(self.batch_size)
            )).all()
        if not rows:
            return 0
        futures = [await self._enqueue(row) for row in rows]
        results = await asyncio.gather(*futures, return_exceptions=True)
        acked_at = _now()
        sent = [row for row, r in zip(rows, results, strict=True)
                if not isinstance(r, BaseException)]
        failed = [(row, r) for row, r in zip(rows, results, strict=True)
                  if isinstance(r, BaseException)]
        async with self.db.transaction() as session:
            if sent:
                await session.execute(update(t).where(t.c.id.in_([r.id for r in sent]))
                                      .values(published_at=acked_at))
            for row, error in failed:
                permanent = isinstance(error, PublishError) and error.permanent
                await session.execute(update(t).where(t.c.id == row.id).values(
                    attempts=t.c.attempts + int(permanent), last_error=str(error)[:2000]))
                if permanent and row.attempts + 1 >= self.max_attempts:
                    log.error("outbox: event row %d parked after %d attempts: %s", row.id,
                              row.attempts + 1, error)
        if failed:
            log.warning("outbox: %d of %d events not acknowledged: %s", len(failed), len(rows),
                        failed[0][1])
        self.published_total += len(sent)
        if self.metrics is not None and sent:
            self.metrics.published(len(sent), [
                (acked_at - _aware(row.created_at)).total_seconds() for row in sent])
        return len(sent)

    async def _enqueue(self, row: Any) -> asyncio.Future[DeliveryReport]:
        """Queue one row; a refusal at queueing time (e.g. too large) becomes that row's
        failed future rather than the whole batch's exception."""
        headers = [(name, value.encode()) for name, value in row.headers]
        try:
            return await self.producer.enqueue(row.topic, row.payload, row.key, headers)
        except PublishError as exc:
            refused: asyncio.Future[DeliveryReport] = asyncio.get_running_loop().create_future()
            refused.set_exception(exc)
            return refused

    async def backlog(self) -> int:
        """How many events wait to be published."""
        async with self.db.session() as session:
            count = await session.scalar(
                select(func.count()).select_from(self.table)
                .where(self.table.c.published_at.is_(None)))
        return int(count or 0)

    async def _housekeeping(self) -> None:
        if self.metrics is not None:
            self.metrics.backlog(await self.backlog())
        async with self.db.transaction() as session:
            await session.execute(self._purge_statement())

    def _purge_statement(self) -> Delete:
        """Rows published longer than `retention` ago; `ix_outbox_published_at` makes this
        a range of the index, not a scan of the table, every few seconds."""
        return delete(self.table).where(self.table.c.published_at < _now() - self.retention)

    async def _keep_lease(self) -> None:
        while True:
            asked = time.monotonic()  # before the database stamps the expiry: errs early
            try:
                holding = await self._acquire_lease()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox lease renewal failed")
                holding = False
            self._held_until = asked + self.lease_ttl if holding else 0.0
            if holding != self._holding:
                log.info("outbox relay %s %s the lease", self.owner,
                         "holds" if holding else "lost")
                self._holding = holding
                self._wake.set()
            await asyncio.sleep(self.lease_ttl / 3)

    def _clock(self) -> Any:
        """The time leases are stamped and judged by: the database's own clock on PostgreSQL,
        where relays may run on hosts whose clocks disagree; the process clock on SQLite,
        whose file lives on one host."""
        return func.now() if self.db.dialect == "postgresql" else _now()

    async def _acquire_lease(self) -> bool:
        lease, now = self.lease, self._clock()
        until = now + timedelta(seconds=self.lease_ttl)
        async with self.db.transaction() as session:
            renewed = await session.execute(
                update(lease)
                .where(lease.c.name == self.name)
                .where((lease.c.owner == self.owner) | (lease.c.expires_at < now))
                .values(owner=self.owner, expires_at=until)
            )
            if renewed.rowcount:  # type: ignore[attr-defined]
                return True
        try:
            async with self.db.transaction() as session:
                await session.execute(
                    insert(lease).values(name=self.name, owner=self.owner, expires_at=until))
            return True
        except IntegrityError:
            return False  # someone else holds it

    async def _release_lease(self) -> None:
        lease = self.lease
        async with self.db.transaction() as session:
            await session.execute(
                update(lease).where(lease.c.name == self.name, lease.c.owner == self.owner)
                .values(expires_at=self._clock() - timedelta(seconds=1)))
        self._holding = False


async def parked(
    db: Database, metadata: MetaData, *, max_attempts: int = MAX_ATTEMPTS
) -> list[ParkedEvent]:
    """The rows parked after `max_attempts` permanent refusals, oldest first."""
    t = outbox_table(metadata)
    async with db.session() as session:
        rows = (await session.execute(
            select(t.c.id, t.c.event_id, t.c.topic, t.c.event_type, t.c.attempts,
                   t.c.last_error, t.c.created_at)
            .where(t.c.published_at.is_(None), t.c.attempts >= max_attempts)
            .order_by(t.c.id))).all()
    return [ParkedEvent(r.id, r.event_id, r.topic, r.event_type, r.attempts,
                        r.last_error or "", _aware(r.created_at)) for r in rows]


async def requeue(
    db: Database,
    metadata: MetaData,
    ids: Sequence[int] | None = None,
    *,
    max_attempts: int = MAX_ATTEMPTS,
) -> int:
    """Give parked rows (all, or those with `ids`) their attempts back, so the relay sends
    them again at its next poll; returns how many."""
    t = outbox_table(metadata)
    where = [t.c.published_at.is_(None), t.c.attempts >= max_attempts]
    if ids is not None:
        where.append(t.c.id.in_(list(ids)))
    async with db.transaction() as session:
        result = await session.execute(update(t).where(*where).values(attempts=0))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _aware(value: datetime) -> datetime:
    # SQLite returns naive datetimes; every time written here is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
