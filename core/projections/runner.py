"""`ProjectionRunner`: one projection kept up to date from its topics.

How it treats each record (the one place this is decided):

- **Position and rows in one transaction.** A batch of records (up to `batch`, in order per
  partition) is applied in one database transaction that first moves the stored position of
  each partition it covers (a compare-and-set, `positions.advance`). A crash anywhere before
  the commit leaves neither rows nor position; the records are read again and applied once.
  Kafka's consumer groups are not used: every partition is assigned and read from the stored
  position, and nothing is committed to Kafka.
- **Position moved under it** (`PositionConflictError`: a rebuild was swapped in, or another
  instance applied the same records first): the transaction rolls back, the runner re-reads
  the positions and reads on from there.
- **Unknown type** (no apply function here, or a type this process cannot decode): skipped;
  the position moves past it.
- **Poison** (a record that cannot be decoded): dead-lettered to `<topic>.dlq` at once (the
  consumer group header reads `projection:<name>`) and skipped.
- **An apply function that raises**: the batch is retried record by record; a failing record
  is retried with backoff (`retry`), while the database is unavailable without spending an
  attempt, then dead-lettered and skipped, so one bad event does not stall the read model
  for every reader. The dead letter is sent before the skip commits (a crash between the two
  sends it twice, never loses it). `python -m core projections rebuild` after the fix brings
  the skipped event in. `PermanentHandlerError` skips the retries.
- **Rebuilding** (`rebuilding=True`): the same, except that an event it cannot apply stops
  the rebuild (`RebuildFailedError`) instead of being skipped, and poison is skipped without
  being dead-lettered again. Without `dead_letters`, what would be dead-lettered is logged
  and skipped.

Per-partition order holds: one task per topic applies its batches one after another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table

from core.config import KafkaConfig
from core.db.engine import Database
from core.db.errors import unavailable
from core.health_check import DegradedError
from core.messaging.dlq import (
    DeadLetterSink,
    KafkaDeadLetterSink,
    dead_letter_headers,
    dlq_topic,
)
from core.messaging.errors import MessagingError, PermanentHandlerError, UnknownEventTypeError
from core.messaging.events import BaseEvent
from core.messaging.kafka_client import GroupInspector, KafkaAdmin, TopicFollower
from core.messaging.serialization import EventSerializer, event_type_of
from core.messaging.types import Record
from core.projections import positions
from core.projections.errors import PositionConflictError, ProjectionError, RebuildFailedError
from core.projections.positions import Partition
from core.projections.projection import Projection, View
from core.resilience.retry import RetryPolicy
from core.tasks import cancel_and_wait

log = logging.getLogger(__name__)


def _retryable(exc: BaseException) -> bool:
    return not isinstance(exc, PermanentHandlerError | ProjectionError)


RETRY = RetryPolicy(max_attempts=5, initial_delay=0.2, max_delay=10.0, should_retry=_retryable)
"""Attempts for a record whose apply function raises, before it is dead-lettered."""
DATABASE_WAIT = RetryPolicy(max_attempts=1_000_000, initial_delay=0.1, max_delay=5.0)
"""Waits while the database is unavailable (never a reason to skip an event)."""
BATCH = 500
STALLED_AFTER = 60.0
"""Seconds with records waiting and none applied after which the health check says stalled."""
RESTART_DELAY = 2.0
"""Seconds between tries to start reading a topic (the broker away, the topic missing)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    record: Record
    event: BaseEvent[Any] | None
    """None: skip it (not applied here, or poison already dealt with)."""


class ProjectionRunner:
    """Runs one projection: `start()` reads on until `stop()`; `run()` (a rebuild) reads to
    the end each partition had and returns. One task per topic; safe on one event loop."""

    def __init__(
        self,
        projection: Projection,
        database: Database,
        kafka: KafkaConfig,
        *,
        dead_letters: DeadLetterSink | None,
        rebuilding: bool = False,
        key: str | None = None,
        tables: Mapping[Table, Table] | None = None,
        retry: RetryPolicy = RETRY,
        batch: int = BATCH,
        stalled_after: float = STALLED_AFTER,
    ) -> None:
        """`rebuilding`: read to the ends and stop, raising on an event it cannot apply (see
        the module doc). `key` is the name its positions are stored under (the
        projection's); `tables` maps the projection's tables to the ones to write
        (themselves)."""
        projection.check()
        self.projection = projection
        self.name = projection.name
        self.key = key or projection.name
        self.database = database
        self.kafka = kafka
        self.dead_letters = dead_letters
        self.tables: Mapping[Table, Table] = tables or {t: t for t in projection.tables}
        self.retry = retry
        self.batch = batch
        self.stalled_after = stalled_after
        self.serializer = EventSerializer(projection.events)
        self.positions_table = positions.declared_positions(projection.metadata)
        self.positions: dict[Partition, int] = {}
        """The next offset to apply per partition, as last stored by this runner."""
        self.applied = self.skipped = self.dead_lettered = 0
        self.failure: BaseException | None = None
        """What stopped a topic's task for good (the projection no longer advances there)."""
        self.waiting: str | None = None
        """Why it is not advancing right now (a retry, the database away), or None."""
        self.progressed_at = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._inspector: GroupInspector | None = None
        self.rebuilding = rebuilding

    async def start(self) -> None:  # pragma: no mutate block
        """Read the stored positions, then follow every topic from there in the background.
        Dead letters going to Kafka need their `<topic>.dlq` topics: made here, as the
        consumers make theirs."""
        if isinstance(self.dead_letters, KafkaDeadLetterSink):
            await KafkaAdmin(self.kafka).create_topics(
                [dlq_topic(t) for t in self.projection.topics])
        await self._reload(None)
        self._tasks = [asyncio.create_task(self._follow(topic), name=f"projection-{self.name}")
                       for topic in self.projection.topics]

    async def run(self) -> None:  # pragma: no mutate block
        """Apply every record up to the end each partition has when it is reached, then
        stop; raises what stopped it (`RebuildFailedError`)."""
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()
        if self.failure is not None:
            raise self.failure

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        if self._inspector is not None:
            await self._inspector.close()
            self._inspector = None

    async def _reload(self, topic: str | None) -> None:
        async with self.database.session() as session:
            stored = await positions.load(session, self.positions_table, self.key)
        for where in [w for w in self.positions if topic is None or w[0] == topic]:
            del self.positions[where]
        self.positions.update({w: o for w, o in stored.items() if topic is None or w[0] == topic})

    async def _follow(self, topic: str) -> None:  # pragma: no mutate block
        try:
            while not await self._read(topic):
                await self._reload_when_possible(topic)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = exc
            if not self.rebuilding:
                log.exception("projection %s stopped reading %s", self.name, topic)

    async def _reload_when_possible(self, topic: str) -> None:  # pragma: no mutate block
        """The stored positions of `topic`, waiting out a database that is away."""
        outages = 0
        while True:
            try:
                await self._reload(topic)
                return
            except Exception as exc:
                if not unavailable(exc):
                    raise
                outages += 1
                self.waiting = f"database unavailable: {exc}"
                await asyncio.sleep(DATABASE_WAIT.delay(min(outages, 20)))

    async def _read(self, topic: str) -> bool:  # pragma: no mutate block
        """Follow `topic` from the positions known until they move under us, or Kafka fails
        it (False: start again from the stored ones), or, rebuilding, to the end (True)."""
        offsets = {p: o for (t, p), o in self.positions.items() if t == topic}
        follower = TopicFollower(self.kafka, topic, offsets=offsets)
        try:
            await follower.start()
            self.waiting = None
            while True:
                records = await follower.poll(self.batch)
                if records:
                    await self._handle(topic, records)
                if self.rebuilding and follower.caught_up:
                    return True
        except PositionConflictError as exc:
            log.info("projection %s: %s; reading on from the stored positions", self.name, exc)
            return False
        except MessagingError as exc:  # the broker away, the topic missing, a fatal client
            if self.rebuilding:
                raise
            self.waiting = f"cannot read {topic}: {exc}"
            log.warning("projection %s: cannot read %s (%s); starting again in %gs",
                        self.name, topic, exc, RESTART_DELAY)
            await asyncio.sleep(RESTART_DELAY)
            return False
        finally:
            await follower.close()

    async def _handle(self, topic: str, records: list[Record]) -> None:
        entries = [await self._decode(record) for record in records]
        if len(entries) > 1:
            try:
                await self._commit(topic, entries)
                return
            except PositionConflictError:
                raise
            except Exception as exc:
                log.info("projection %s: a batch of %d failed (%r); applying one by one",
                         self.name, len(entries), exc)
        for entry in entries:
            await self._apply_one(topic, entry)

    async def _decode(self, record: Record) -> _Entry:
        event_type = event_type_of(record.headers)
        if event_type is not None and not self.projection.applies_type(event_type):
            return _Entry(record, None)
        try:
            event = self.serializer.deserialize(record.value, record.headers)
        except UnknownEventTypeError:
            return _Entry(record, None)
        except Exception as exc:  # any failure to decode is poison, never a crash
            if self.position(record) <= record.offset:  # not dead-lettered before
                await self._poison(record, exc)
            return _Entry(record, None)
        if self.projection.apply_for(event.EVENT_TYPE) is None:
            return _Entry(record, None)
        return _Entry(record, event)

    def position(self, record: Record) -> int:
        return self.positions.get((record.topic, record.partition), -1)

    async def _poison(self, record: Record, error: Exception) -> None:
        log.warning("projection %s: poison record %s/%d@%d: %s", self.name, record.topic,
                    record.partition, record.offset, error)
        if not self.rebuilding:
            await self._dead_letter(record, error, 1)

    async def _apply_one(self, topic: str, entry: _Entry) -> None:
        attempt, outages = 1, 0
        while True:
            try:
                await self._commit(topic, [entry])
                self.waiting = None
                return
            except PositionConflictError:
                raise
            except Exception as exc:
                where = f"{entry.record.topic}/{entry.record.partition}@{entry.record.offset}"
                if unavailable(exc):
                    outages += 1
                    self.waiting = f"database unavailable: {exc}"
                    await asyncio.sleep(DATABASE_WAIT.delay(min(outages, 20)))
                    continue
                if self.retry.retries(exc, attempt):
                    self.waiting = f"retrying {where} (attempt {attempt} failed: {exc!r})"
                    await asyncio.sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                if self.rebuilding or entry.event is None:
                    raise RebuildFailedError(
                        f"projection {self.name} cannot apply {where}: {exc!r}") from exc
                log.error("projection %s: giving up on %s %s at %s after %d attempts: %r",
                          self.name, entry.event.EVENT_TYPE, entry.event.event_id, where,
                          attempt, exc)
                await self._dead_letter(entry.record, exc, attempt)
                entry, attempt = _Entry(entry.record, None), 1  # now only move past it

    async def _commit(self, topic: str, entries: list[_Entry]) -> None:
        """Apply `entries` (all of `topic`) and move the positions past them, in one
        transaction; records below the stored position were applied already."""
        todo = [e for e in entries if e.record.offset >= self.position(e.record)]
        if not todo:
            return
        spans: dict[int, tuple[int | None, int]] = {}
        for entry in todo:
            p = entry.record.partition
            start = spans[p][0] if p in spans else self.positions.get((topic, p))
            spans[p] = (start, entry.record.offset + 1)
        applied = 0
        async with self.database.transaction() as session:
            for p, (expected, to) in spans.items():
                await positions.advance(session, self.positions_table, self.key, (topic, p),
                                        expected, to)
            for entry in todo:
                if entry.event is None:
                    continue
                apply = self.projection.apply_for(entry.event.EVENT_TYPE)
                assert apply is not None  # _decode keeps only events with one
                await apply(entry.event, View(session, entry.record, self.tables))
                applied += 1
        for p, (_, to) in spans.items():
            self.positions[(topic, p)] = to
        self.applied += applied
        self.skipped += len(todo) - applied
        self.progressed_at = time.monotonic()
        self.waiting = None

    async def _dead_letter(self, record: Record, error: BaseException, attempts: int) -> None:
        self.dead_lettered += 1
        if self.dead_letters is None:
            log.error("projection %s skips %s/%d@%d (no dead-letter sink): %r", self.name,
                      record.topic, record.partition, record.offset, error)
            return
        headers = dead_letter_headers(record, error, attempts, [self.name],
                                      f"projection:{self.name}")
        while True:
            try:
                await self.dead_letters.send(record, headers)
                return
            except Exception:
                log.exception("projection %s cannot dead-letter %s/%d@%d; trying again",
                              self.name, record.topic, record.partition, record.offset)
                await asyncio.sleep(1.0)

    async def lag(self) -> dict[Partition, int]:  # pragma: no mutate block
        """Records per partition written to its topics and not applied yet (asks the broker
        for the partitions' ends; raises when it does not answer)."""
        if self._inspector is None:
            self._inspector = GroupInspector(self.kafka, f"{self.kafka.client_id}-{self.key}")
        ends = await self._inspector.ends(self.projection.topics)
        return {w: max(0, end - self.positions.get(w, 0)) for w, end in ends.items()}

    async def check(self) -> str:
        """The health check: what stopped it, why it waits, or its lag; stalled when records
        wait and none was applied for `stalled_after` seconds."""
        if self.failure is not None:
            raise self.failure
        if self.waiting is not None:
            raise DegradedError(f"projection {self.name}: {self.waiting}")
        behind = sum((await self.lag()).values())
        idle = time.monotonic() - self.progressed_at
        if behind and idle > self.stalled_after:
            raise DegradedError(f"projection {self.name} stalled: {behind} records waiting, "
                                f"none applied for {idle:.1f}s")
        return f"lag {behind}"
