"""Transactional outbox: an event is a row written in the same transaction as the state change
it describes; a relay publishes pending rows to Kafka and marks them sent.

- `OutboxWriter.add(session, topic, event)` inserts the row through the caller's session;
  after that session commits, in-process relays are woken at once (no poll delay).
- `OutboxRelay` hands pending rows to the idempotent producer in id order, pipelined, and
  records each row sent (or refused) as its acknowledgement arrives, not when the whole batch
  is done. Several instances of a service may each run a relay: a lease row elects one
  publisher at a time, renewed in the background while it lives; if it dies, another takes
  over once the lease expires.
- Its parts are this package's other modules, all re-exported by `core.messaging.outbox`:
  the writer (`writer`), the tables and the tools for parked rows, `parked`, `requeue`,
  `discard` (`store`), and the lease (`lease`).

ORDER PER KEY, AND WHAT STOPS IT. Rows with the same topic and key reach Kafka in commit order.
To keep that promise, a row that fails HOLDS BACK EVERY LATER ROW OF ITS TOPIC AND KEY (and
nothing else: other keys, other topics and rows without a key flow on):

- while it is retried, and, once parked after `max_attempts` permanent refusals, until it is
  requeued (`requeue()`) and published, or discarded for good (`discard()`). A parked row is
  an incident that stops its key; `parked()` lists each with how many rows it holds back.
- Within a batch, a row refused when handed to the producer (too large; a topic known to be
  missing) keeps the later rows of its key out of that batch. A refusal that only comes back
  in the delivery report cannot recall the later rows of its key already handed over with it:
  those may reach Kafka first. Refusals of a whole topic (missing, not authorized) refuse them
  too, so only a broker refusing one record (say, a topic whose `max.message.bytes` is below
  the producer's limit) lets that happen; from then on the key is held.

MISSING TOPICS. Brokers that create no topic on first use (production does not) refuse a row
to a missing topic, but only after librdkafka has waited `topic.metadata.propagation.max.ms`
(30 s) for the topic to appear; after that, produce() refuses it at once. The relay waits at
most `ack_wait` for a batch: a row still unacknowledged then stays in flight, holding back
only its own key, and the relay moves on. A missing topic counts as a permanent refusal, and
so does a delivery timeout when fresh metadata shows the topic missing; the row is parked
after its attempts with the reason in `last_error`. Create topics before publishing to them:
`create_service(publishes=[...])` does so at start-up.

BROKER OUTAGES DO NOT REORDER A KEY. The relay publishes through a producer of its own
(`relay_producer`) that never times a record out (`message.timeout.ms=0`): librdkafka's
idempotent producer keeps retrying, in order, until the broker returns. With a delivery
timeout, an outage longer than it could fail one row while a later row of its key, handed over
a moment later in the same batch, got through after the broker came back; the failed row was
then published again after it. `stop()` does not wait for such rows beyond `drain_timeout`:
they stay unpublished in the table, and the next relay publishes them in order.

Delivery is at-least-once: a relay that dies (or loses its lease) after Kafka acknowledged a
row but before it recorded it publishes it again later; consumers' inbox absorbs the repeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import MetaData, Select, func, or_, select, tuple_, update
from sqlalchemy.sql.dml import Delete

from core.config import KafkaConfig
from core.db.engine import Database
from core.messaging.errors import (
    DeliveryTimeoutError,
    MessagingError,
    PublishError,
    UnknownTopicError,
)
from core.messaging.kafka_client import DeliveryReport, KafkaProducer
from core.messaging.outbox.lease import RelayLease
from core.messaging.outbox.store import (
    MAX_ATTEMPTS,
    aware,
    lease_table,
    outbox_table,
)

__all__ = ["RELAY_PRODUCER", "OutboxMetrics", "OutboxRelay", "relay_producer"]

log = logging.getLogger(__name__)


RECORD_TICK = 0.05
"""Longest wait before acknowledgements that arrived are recorded (see `_await`)."""


RELAY_PRODUCER: dict[str, Any] = {"message.timeout.ms": 0}
"""The relay's producer settings: no delivery timeout, so an outage delays a key's rows but
never reorders them (see the module docstring)."""

RELAY_LINGER_MS = 0
"""The relay producer's default linger: it hands rows over a whole batch at a time, so
lingering for more only delays a lone commit (by the bus's 5 ms)."""


def relay_producer(config: KafkaConfig, **overrides: Any) -> KafkaProducer:
    """A producer for one `OutboxRelay` alone: idempotent, and it never gives up on a record.
    Not for request-reply or dead letters, which need their failures reported."""
    return KafkaProducer(config, **{"linger.ms": RELAY_LINGER_MS, **overrides,
                                    **RELAY_PRODUCER})


def _now() -> datetime:
    return datetime.now(UTC)


class OutboxMetrics(Protocol):
    """Where the relay reports; a Prometheus adapter implements it in core.metrics."""

    def published(self, count: int, latencies: Sequence[float]) -> None: ...

    def backlog(self, count: int) -> None: ...


def _retrieve(ack: asyncio.Future[DeliveryReport]) -> None:
    """Read an abandoned acknowledgement's outcome, so asyncio does not report it as lost."""
    if not ack.cancelled():
        ack.exception()


@dataclass(frozen=True, slots=True)
class _Sending:
    """A row handed to the producer, until its acknowledgement or refusal is recorded."""

    id: int
    topic: str
    key: str | None
    created_at: datetime
    attempts: int
    ack: asyncio.Future[DeliveryReport]


class OutboxRelay:
    """Publishes pending outbox rows to Kafka. Start one per process; the lease decides which
    process's relay actually publishes.

    A row Kafka refuses for good (too large, missing or invalid topic, not authorized) is
    parked after `max_attempts` tries: left unpublished and logged. It holds back the later
    rows of its own topic and key (see the module docstring), never other keys. Failures
    that heal (the broker away) never count toward parking.

    `ack_wait` bounds how long the running relay waits for a batch before it starts the next
    (rows still unacknowledged stay in flight, at most `max_in_flight` of them); `stop()`
    lets the rows in flight finish for up to `drain_timeout` seconds.

    `notify()` (the writer's after-commit hook) starts a poll at once, even while the batch
    before awaits its acknowledgements: a lone commit is handed over without waiting for
    them, nor for `poll_interval`, which only finds rows other processes wrote.
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
        ack_wait: float = 1.0,
        max_in_flight: int | None = None,
        drain_timeout: float = 10.0,
        metrics: OutboxMetrics | None = None,
    ) -> None:
        self.db = db
        self.producer = producer
        self.table = outbox_table(metadata)
        self.lease = RelayLease(db, lease_table(metadata), name=name, owner=owner,
                                ttl=lease_ttl)
        self.owner = owner
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lease_ttl = lease_ttl
        self.retention = retention
        self.max_attempts = max_attempts
        self.ack_wait = ack_wait
        self.max_in_flight = max_in_flight or 4 * batch_size
        self.drain_timeout = drain_timeout
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._committed = asyncio.Event()  # set by `notify` alone: new rows to poll for
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_flight: dict[int, _Sending] = {}
        self._full_batch = False
        self.published_total = 0

    def notify(self) -> None:
        """Wake the relay now (called after a commit that added events)."""
        self._committed.set()
        self._wake.set()

    @property
    def holds_lease(self) -> bool:
        """Whether this relay may start a batch: it won the lease, and by its own monotonic clock
        the lease is not about to lapse (a process paused past the TTL must renew first)."""
        return self.lease.valid

    @property
    def in_flight(self) -> int:
        """Rows handed to the producer whose acknowledgement is not recorded yet."""
        return len(self._in_flight)

    async def start(self) -> None:
        self._stopping = False
        self._runner = asyncio.create_task(self._run(), name=f"outbox-relay:{self.owner}")
        self._tasks = [
            asyncio.create_task(self.lease.keep(self._wake.set),
                                name=f"outbox-lease:{self.owner}"),
            self._runner,
        ]

    async def stop(self) -> None:
        """Start no new batch; let the batch in flight finish and record its acknowledgements
        (for at most `drain_timeout` seconds: rows still unacknowledged then are published
        again by the next relay), hand the lease back, stop.

        If the caller is cancelled meanwhile, the relay's tasks are cancelled, the lease is
        left to expire, and the cancellation goes on up.
        """
        self._stopping = True
        self._wake.set()
        tasks, self._tasks = self._tasks, []
        runner, self._runner = self._runner, None
        deadline = time.monotonic() + self.drain_timeout
        try:
            if runner is not None and not runner.done():
                await asyncio.wait([runner], timeout=self.drain_timeout)
                if not runner.done():  # stuck (the database?): what it recorded, it recorded
                    runner.cancel()
                    await asyncio.wait([runner])
            await self._drain(deadline)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for abandoned in self._in_flight.values():  # published again by the next relay
            abandoned.ack.add_done_callback(_retrieve)
        self._in_flight.clear()
        if self.lease.holding:
            await self.lease.release()

    async def _drain(self, deadline: float) -> None:
        """Record acknowledgements of the rows in flight as they arrive, until none is left or
        `deadline` passes."""
        while self._in_flight:
            waiting = [s.ack for s in self._in_flight.values() if not s.ack.done()]
            left = deadline - time.monotonic()
            if waiting and left > 0:
                await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            try:
                await self._record_settled()
            except Exception:
                log.exception("outbox relay %s could not record acknowledgements", self.owner)
                return
            if waiting and left <= 0:
                log.warning("outbox relay %s stopped with %d rows unacknowledged; they will be "
                            "published again", self.owner, len(self._in_flight))
                return

    async def _run(self) -> None:
        last_housekeeping = 0.0
        while not self._stopping:
            try:
                more = False
                if self.holds_lease:
                    # Cleared before the poll, so a commit from now on wakes the next one.
                    self._wake.clear()
                    self._committed.clear()
                    published = await self._publish(self.ack_wait, interrupt=True)
                    more = self._full_batch and published > 0  # a backlog, and it moves
                else:  # an acknowledgement is a fact, lease or not
                    await self._record_settled()
                if time.monotonic() - last_housekeeping > 5.0 and self.holds_lease:
                    last_housekeeping = time.monotonic()
                    await self._housekeeping()
                if not more:
                    await self._idle(self.poll_interval if self.lease.holding
                                     else self.lease_ttl / 3)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay %s failed; retrying", self.owner)
                await self._idle(1.0)

    async def _idle(self, seconds: float) -> None:
        if self._stopping:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    async def publish_batch(self, *, ack_wait: float | None = None) -> int:
        """Hand up to `batch_size` pending rows to the producer in id order and record each
        row as its acknowledgement arrives; returns how many rows were recorded sent (this
        batch's, and those of earlier batches that arrived meanwhile).

        `ack_wait=None` waits for every row of the batch. A number waits at most that long:
        rows still unacknowledged then stay in flight, their keys held back, and are recorded
        when their reports arrive, by a later call or by `stop()`.

        Call directly only where no other relay runs (tests, benchmarks); `start()` otherwise.
        """
        return await self._publish(ack_wait, interrupt=False)

    async def _publish(self, ack_wait: float | None, *, interrupt: bool) -> int:
        """`publish_batch`; with `interrupt`, a wake-up (a commit) ends the wait for
        acknowledgements early, so the next poll hands new rows over while this batch's
        are still in flight, instead of queueing them behind its acknowledgements."""
        sent = await self._record_settled()
        room = self.max_in_flight - len(self._in_flight)
        self._full_batch = False
        if self._stopping or room <= 0:
            return sent
        limit = min(self.batch_size, room)
        rows = await self._pending(limit)
        self._full_batch = len(rows) == limit
        acks = await self._hand_over(rows)
        return sent + await self._await(acks, ack_wait, self._committed if interrupt else None)

    async def _pending(self, limit: int) -> Sequence[Any]:
        async with self.db.session() as session:
            rows: Sequence[Any] = (await session.execute(self._pending_statement(limit))).all()
        return rows

    def _pending_statement(self, limit: int) -> Select[Any]:
        """The next rows to send, in id order: unpublished, not parked, not in flight, and not
        behind a failing row, or a row in flight, of the same topic and key."""
        t = self.table
        earlier = t.alias("earlier")
        behind_failing = select(earlier.c.id).where(  # ix_outbox_failing answers this
            earlier.c.published_at.is_(None), earlier.c.attempts > 0,
            earlier.c.topic == t.c.topic, earlier.c.key == t.c.key, earlier.c.id < t.c.id,
        ).exists()
        query = (
            select(t.c.id, t.c.topic, t.c.key, t.c.payload, t.c.headers, t.c.created_at,
                   t.c.attempts)
            .where(t.c.published_at.is_(None), t.c.attempts < self.max_attempts,
                   ~behind_failing)
        )
        if self._in_flight:
            query = query.where(t.c.id.not_in(list(self._in_flight)))
            keys = {(s.topic, s.key) for s in self._in_flight.values() if s.key is not None}
            if keys:
                query = query.where(or_(t.c.key.is_(None),
                                        tuple_(t.c.topic, t.c.key).not_in(list(keys))))
        return query.order_by(t.c.id).limit(limit)

    async def _hand_over(self, rows: Sequence[Any]) -> list[asyncio.Future[DeliveryReport]]:
        """Queue `rows` in order. A row refused on the spot (too large, topic known missing)
        becomes that row's failed acknowledgement, and keeps the later rows of its topic and
        key out of this batch, since they would overtake it."""
        refused: set[tuple[str, str]] = set()
        acks = []
        for row in rows:
            if row.key is not None and (row.topic, row.key) in refused:
                continue
            headers = [(name, value.encode()) for name, value in row.headers]
            try:
                ack = await self.producer.enqueue(row.topic, row.payload, row.key, headers)
            except PublishError as exc:
                ack = asyncio.get_running_loop().create_future()
                ack.set_exception(exc)
                if row.key is not None:
                    refused.add((row.topic, row.key))
            self._in_flight[row.id] = _Sending(row.id, row.topic, row.key, row.created_at,
                                               row.attempts, ack)
            acks.append(ack)
        return acks

    async def _await(
        self,
        acks: list[asyncio.Future[DeliveryReport]],
        timeout: float | None,
        wake: asyncio.Event | None = None,
    ) -> int:
        """Record acknowledgements as they arrive, until all of `acks` have, `timeout`
        passes, or `wake` is set (rows committed meanwhile: the caller polls again at once);
        the rest wake the relay when they arrive.

        Arrivals are recorded together every `RECORD_TICK` at most, not one transaction per
        wake-up: reports come in bursts, and on SQLite each recording transaction competes
        with the service's own writers for the one write lock."""
        sent = 0
        waiting = {ack for ack in acks if not ack.done()}
        deadline = None if timeout is None else time.monotonic() + timeout
        woken: asyncio.Future[Any] | None = None
        all_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        remaining = len(waiting)

        def one_done(_: object) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0 and not all_done.done():
                all_done.set_result(None)

        for ack in waiting:
            ack.add_done_callback(one_done)
        if wake is not None and waiting:
            woken = asyncio.ensure_future(wake.wait())
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                tick = RECORD_TICK if left is None else min(RECORD_TICK, left)
                if waiting:
                    await asyncio.wait([all_done] if woken is None else [all_done, woken],
                                       timeout=tick, return_when=asyncio.FIRST_COMPLETED)
                    waiting = {ack for ack in waiting if not ack.done()}
                if any(ack.done() for ack in acks):
                    sent += await self._record_settled()
                if not waiting or (woken is not None and woken.done()):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            if woken is not None and not woken.done():
                woken.cancel()
        for ack in waiting:
            ack.add_done_callback(lambda _: self._wake.set())
        return sent

    async def _record_settled(self) -> int:
        """Record every row in flight whose report arrived: sent rows get `published_at`,
        refused ones their error, and an attempt when the refusal is permanent."""
        settled = [s for s in self._in_flight.values() if s.ack.done()]
        if not settled:
            return 0
        acked_at = _now()
        sent = [s for s in settled if not s.ack.cancelled() and s.ack.exception() is None]
        sent_ids = {s.id for s in sent}
        topics: dict[str, bool | None] = {}
        failed = [(s, *await self._refusal(s, topics)) for s in settled if s.id not in sent_ids]
        t = self.table
        async with self.db.transaction() as session:
            if sent:
                await session.execute(update(t).where(t.c.id.in_([s.id for s in sent]))
                                      .values(published_at=acked_at))
            for row, permanent, error in failed:
                await session.execute(update(t).where(t.c.id == row.id).values(
                    attempts=t.c.attempts + int(permanent), last_error=error[:2000]))
        for s in settled:
            self._in_flight.pop(s.id, None)
        for row, permanent, error in failed:
            if permanent and row.attempts + 1 >= self.max_attempts:
                log.error("outbox: event row %d parked after %d attempts, holding back the "
                          "later rows of key %r on %s: %s", row.id, row.attempts + 1, row.key,
                          row.topic, error)
        if failed:
            log.warning("outbox: %d of %d events not acknowledged: %s", len(failed),
                        len(settled), failed[0][2])
        self.published_total += len(sent)
        if self.metrics is not None and sent:
            self.metrics.published(len(sent), [
                (acked_at - aware(s.created_at)).total_seconds() for s in sent])
        return len(sent)

    async def _refusal(
        self, row: _Sending, topics: dict[str, bool | None]
    ) -> tuple[bool, str]:
        """Whether the row's failure counts toward parking, and the error to record. Missing
        topics are checked against fresh metadata (cached in `topics` for one call): a
        timeout is permanent only if the topic is missing, and a refusal as unknown is not
        when the topic exists by now (the producer's view was stale)."""
        error = None if row.ack.cancelled() else row.ack.exception()
        if not isinstance(error, PublishError):
            return False, f"not acknowledged: {error or 'cancelled'}"
        if isinstance(error, UnknownTopicError | DeliveryTimeoutError):
            if row.topic not in topics:
                try:
                    topics[row.topic] = await self.producer.topic_exists(row.topic)
                except MessagingError:
                    topics[row.topic] = None  # no broker answers: cannot tell
            exists = topics[row.topic]
            if exists is False:
                return True, f"{row.topic}: the topic does not exist ({error})"
            if exists is True:
                return False, str(error)
        return error.permanent, str(error)

    async def backlog(self) -> int:
        """How many events wait to be published (parked ones and those they hold included)."""
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
        return self.table.delete().where(self.table.c.published_at < _now() - self.retention)
