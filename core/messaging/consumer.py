"""`EventConsumer`: a Kafka consumer-group member that runs handlers with the right guarantees.

- Order per key: records with the same key (in one partition) run one after another, in
  offset order. Records with different keys run concurrently, up to `max_in_flight`.
- Retries happen inside the record's own lane (see `dispatch.py`), so a failing key delays
  only itself and records queued behind it with the same key, never other keys, and only
  for as long as the retry policy allows before the record is dead-lettered.
- Offsets are stored for commit only up to the lowest record still in flight, after its
  handlers finished (or it was dead-lettered): at-least-once delivery, and with idempotent
  handlers, exactly-once effects.
- Rebalance: before partitions are taken away, in-flight records on them finish (up to
  `drain_timeout`) and their offsets are committed, so the next owner starts where this one
  stopped. `stop()` finishes in-flight work the same way, then leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from core.config import KafkaConfig
from core.messaging.dispatch import DEFAULT_RETRY, Outcome, RecordDispatcher
from core.messaging.dlq import DeadLetterSink, KafkaDeadLetterSink
from core.messaging.handlers import HandlerRegistry
from core.messaging.idempotency import IdempotencyStore, InMemoryIdempotencyStore
from core.messaging.kafka_client import KafkaConsumer, KafkaProducer, TopicPartitionKey
from core.messaging.offsets import OffsetTracker
from core.messaging.serialization import EventRegistry
from core.messaging.types import Record
from core.resilience.retry import RetryPolicy

log = logging.getLogger(__name__)

Handler = HandlerRegistry | Callable[..., Awaitable[None]]
Lane = tuple[str, int, bytes | None]


class EventConsumer:
    """Consumes topics in one consumer group and dispatches records to handlers.

    Build it, `subscribe` one or more times, then `start()`; `stop()` drains and leaves the
    group. One instance is driven by one event loop. The producer (for dead letters) is
    shared, not owned: start and stop it yourself.
    """

    def __init__(
        self,
        config: KafkaConfig,
        producer: KafkaProducer,
        *,
        group_id: str | None = None,
        events: EventRegistry | None = None,
        idempotency: IdempotencyStore | None = None,
        dead_letters: DeadLetterSink | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_in_flight: int = 1000,
        drain_timeout: float = 30.0,
        **kafka_overrides: Any,
    ) -> None:
        self.config = config
        self.group_id = group_id or config.consumer_group
        self.events = events or EventRegistry()
        self._idempotency = idempotency or InMemoryIdempotencyStore()
        self._dead_letters = dead_letters or KafkaDeadLetterSink(producer)
        self._retry = retry
        self._routes: dict[str, RecordDispatcher] = {}
        self._max_in_flight = max_in_flight
        self._drain_timeout = drain_timeout
        self._kafka_overrides = kafka_overrides
        self._client: KafkaConsumer | None = None
        self._tracker = OffsetTracker()
        # One worker task per lane with work queued; it drains its lane's deque in order.
        self._lanes: dict[Lane, deque[Record]] = {}
        self._workers: dict[Lane, asyncio.Task[None]] = {}
        self._owned: set[TopicPartitionKey] = set()
        self._in_flight = 0
        self._room = asyncio.Event()
        self._room.set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._assigned = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.processed: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    def subscribe(self, topics: Iterable[str] | str, handler: Handler) -> None:
        """Route `topics` to `handler`: a `HandlerRegistry`, or one async function called with
        every event (of a type in `events`) on those topics."""
        if self._client is not None:
            raise RuntimeError("subscribe before start()")
        registry = (handler if isinstance(handler, HandlerRegistry)
                    else HandlerRegistry.for_all(self.events, handler))
        dispatcher = RecordDispatcher(registry, self._idempotency, self._dead_letters,
                                      retry=self._retry, consumer_group=self.group_id)
        for topic in [topics] if isinstance(topics, str) else topics:
            self._routes[topic] = dispatcher

    async def start(self) -> None:
        if not self._routes:
            raise RuntimeError("nothing subscribed")
        self._loop = asyncio.get_running_loop()
        self._client = KafkaConsumer(
            self.config, self.group_id, on_assign=self._on_assign, on_revoke=self._on_revoke,
            **self._kafka_overrides,
        )
        await self._client.subscribe(self._routes)
        self._loop_task = asyncio.create_task(self._run(), name=f"consumer:{self.group_id}")

    async def wait_assigned(self, timeout: float = 30.0) -> None:
        """Until this member owns at least one partition (useful before relying on it)."""
        await asyncio.wait_for(self._assigned.wait(), timeout)

    async def _run(self) -> None:
        assert self._client is not None
        client, tracker = self._client, self._tracker
        while not self._stopping:
            try:
                await self._room.wait()
                room = self._max_in_flight - self._in_flight
                records = await client.poll(min(500, room), 0.1, tracker.take())
                for record in records:
                    if (record.topic, record.partition) in self._owned:
                        self._schedule(record)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumer loop error in group %s; continuing", self.group_id)
                await asyncio.sleep(1.0)

    def _schedule(self, record: Record) -> None:
        self._tracker.received((record.topic, record.partition), record.offset)
        self._in_flight += 1
        if self._in_flight >= self._max_in_flight:
            self._room.clear()
        lane = (record.topic, record.partition, record.key)
        queue = self._lanes.get(lane)
        if queue is None:
            queue = self._lanes[lane] = deque()
            self._workers[lane] = asyncio.create_task(self._drain_lane(lane, queue))
        queue.append(record)

    async def _drain_lane(self, lane: Lane, queue: deque[Record]) -> None:
        """Process a lane's records one after another until its queue is empty."""
        routes, tracker, processed = self._routes, self._tracker, self.processed
        try:
            while queue:
                record = queue[0]
                try:
                    outcome = await routes[record.topic].process(record)
                except Exception:
                    # A bug, not a handler failure (the dispatcher catches those). The lane
                    # stops here and its offsets stay uncommitted: redelivered after restart.
                    log.critical("record %s/%d@%d crashed the dispatcher", record.topic,
                                 record.partition, record.offset, exc_info=True)
                    return
                queue.popleft()
                processed[outcome] += 1
                tracker.finished((record.topic, record.partition), record.offset)
                self._in_flight -= 1
                if not self._room.is_set() and self._in_flight < self._max_in_flight:
                    self._room.set()
        finally:
            if self._lanes.get(lane) is queue:
                del self._lanes[lane]
                del self._workers[lane]
            if queue:  # abandoned (revoked, stopped or crashed): free their room
                self._in_flight -= len(queue)
                self._room.set()

    # Rebalance callbacks run on the consumer's own thread, inside poll; they hand the work
    # to the event loop and block that thread until it is done.
    def _on_assign(self, partitions: list[TopicPartitionKey]) -> None:
        assert self._loop is not None
        self._owned.update(partitions)
        if partitions:  # cooperative rebalancing may call with an empty increment first
            self._loop.call_soon_threadsafe(self._assigned.set)
        log.info("group %s assigned %s", self.group_id, partitions)

    def _on_revoke(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        assert self._loop is not None
        log.info("group %s revoking %s", self.group_id, partitions)
        future = asyncio.run_coroutine_threadsafe(self._drain(partitions), self._loop)
        try:
            return future.result()
        except Exception:
            log.exception("draining revoked partitions failed")
            return {}

    async def _drain(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        revoked = set(partitions)
        self._owned.difference_update(revoked)
        await self._finish([w for lane, w in self._workers.items() if lane[:2] in revoked])
        return self._tracker.forget(partitions)

    async def _finish(self, tasks: list[asyncio.Task[None]]) -> None:
        """Let lane workers finish within `drain_timeout`; cancel the rest (their records stay
        uncommitted, so whoever owns the partition next redoes them)."""
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self._drain_timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    async def stop(self) -> None:
        """Finish in-flight records (up to `drain_timeout`), commit, and leave the group."""
        if self._loop_task is None or self._client is None:
            return
        self._stopping = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop_task
        await self._finish(list(self._workers.values()))
        await self._client.store_offsets(self._tracker.take())
        await self._client.close()
        self._client = None
        self._loop_task = None
