"""`EventConsumer`: a Kafka consumer-group member that runs handlers with the right guarantees.

- Order per key: records with the same key (in one partition) run one after another, in
  offset order. Records with different keys run concurrently. A record is never overtaken by
  a later one of its key: not by a retry, not even when the dispatcher itself crashes (the
  record is tried again, its key waits, and the crash is logged as critical).
- Retries happen inside the record's own lane (see `dispatch.py`), so a failing key delays
  only itself and records queued behind it with the same key, never other keys, and only
  for as long as the retry policy allows before the record is dead-lettered.
- Flow control: at most about `max_in_flight` records are unfinished. A full consumer waits
  for room (up to `STALL_WAIT`); if none frees up, the partitions holding their share
  (`max_in_flight / owned partitions`) or more are paused, resumed once drained to half, and
  the loop keeps polling: other partitions keep flowing and the member stays in its group
  however long one key is stuck.
- Offsets are stored for commit only up to the lowest record still in flight, after its
  handlers finished (or it was dead-lettered): at-least-once delivery, and with idempotent
  handlers, exactly-once effects.
- Topics: before joining the group, the consumer makes sure each subscribed topic's
  `<topic>.dlq` exists (and, unless told not to, the subscribed topics themselves), with the
  config's partitions and replication: a dead letter never waits for a topic nobody made.
- Rebalance: before partitions are taken away, in-flight records on them finish (up to
  `drain_timeout`) and their offsets are committed, so the next owner starts where this one
  stopped. Partitions *lost* (the member was thrown out) stop their handlers at once: their
  new owner is already redoing those records. `stop()` finishes in-flight work within
  `drain_timeout`, then leaves the group; a stopped consumer can be started again.
- Failure: an error the consumer cannot recover from (authentication, authorization, a
  fenced member) stops it; `failure` holds the error, for readiness checks to report.
- Stranded: a member out of its group (no partition, and no member id: the group does not
  count it) while the group has records waiting, for longer than the session timeout, is
  `stranded` (logged, and readiness says degraded with the reason); after `rejoin_after`
  it rejoins with a fresh client. librdkafka can leave a member out for good: after a broker
  frozen past the session timeout, the group coordinator's connection may never come back
  up, the requests to it sit queued, and nothing rejoins until the process restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from core.config import KafkaConfig
from core.messaging.dispatch import DEFAULT_RETRY, Outcome, RecordDispatcher
from core.messaging.dlq import DeadLetterSink, KafkaDeadLetterSink, dlq_topic
from core.messaging.errors import ConsumerFailedError
from core.messaging.handlers import HandlerMiddleware, HandlerRegistry
from core.messaging.idempotency import IdempotencyStore, InMemoryIdempotencyStore
from core.messaging.kafka_client import (
    SESSION_TIMEOUT_MS,
    GroupInspector,
    KafkaAdmin,
    KafkaConsumer,
    KafkaProducer,
    TopicPartitionKey,
)
from core.messaging.offsets import OffsetTracker
from core.messaging.serialization import EventRegistry
from core.messaging.types import Record
from core.resilience.retry import RetryPolicy
from core.runtime import Runtime

log = logging.getLogger(__name__)

Handler = HandlerRegistry | Callable[..., Awaitable[None]]
Lane = tuple[str, int, bytes | None]
STALL_WAIT = 1.0
"""How long a full consumer waits for room before pausing the partitions that are full."""
POLL_ERROR_WAIT = 1.0
"""How long the loop waits after an unexpected error from a poll before polling again."""
CRASH_RETRY = RetryPolicy(max_attempts=1_000_000, initial_delay=1.0, max_delay=30.0)
"""Waits before a record that crashed the dispatcher is tried again (its key waits too)."""
WATCH_INTERVAL = 2.0
"""How often a member without partitions asks the broker whether its group has records
waiting (only while it has been out for longer than the session timeout)."""
CLOSE_TIMEOUT = 30.0
"""How long a stranded client replaced by a fresh one is given to close."""


class EventConsumer:
    """Consumes topics in one consumer group and dispatches records to handlers.

    Build it, `subscribe` one or more times, then `start()`; `stop()` drains and leaves the
    group. One instance is driven by one event loop. The producer (for dead letters) is
    shared, not owned: start and stop it yourself. `middleware` wraps every handler it runs,
    outside each registry's own, the first outermost (see `core.messaging.handlers`).
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
        create_topics: bool = True,
        rejoin_after: float | None = None,
        runtime: Runtime | None = None,
        middleware: Sequence[HandlerMiddleware] = (),
        **kafka_overrides: Any,
    ) -> None:
        self.config = config
        self.group_id = group_id or config.consumer_group
        self.events = events or EventRegistry()
        self._idempotency = idempotency or InMemoryIdempotencyStore()
        self._dead_letters = dead_letters or KafkaDeadLetterSink(producer)
        self._retry = retry
        self.runtime = runtime if runtime is not None else Runtime()
        """The service's parts, handed to every handler as `ctx.runtime`."""
        self._middleware = tuple(middleware)
        self._routes: dict[str, RecordDispatcher] = {}
        self._max_in_flight = max_in_flight
        self._drain_timeout = drain_timeout
        self._create_topics = create_topics
        self._kafka_overrides = kafka_overrides
        self.session_timeout = int(kafka_overrides.get("session.timeout.ms",
                                                       SESSION_TIMEOUT_MS)) / 1000
        self.rejoin_after = 3 * self.session_timeout if rejoin_after is None else rejoin_after
        """Seconds stranded before the member rejoins with a fresh client."""
        self._client: KafkaConsumer | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._inspector: GroupInspector | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._assigned = asyncio.Event()
        self.failure: BaseException | None = None
        """Why the consumer stopped by itself (see `ConsumerFailedError`), else None."""
        self.processed: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self._reset()

    def _reset(self) -> None:
        """The per-run state: fresh for every start()."""
        self._stopping = False
        self._tracker = OffsetTracker()
        # One worker task per lane with work queued; it drains its lane's deque in order.
        self._lanes: dict[Lane, deque[Record]] = {}
        self._workers: dict[Lane, asyncio.Task[None]] = {}
        self._owned: set[TopicPartitionKey] = set()
        self._paused: set[TopicPartitionKey] = set()
        self._pending: dict[TopicPartitionKey, int] = {}  # unfinished records per partition
        self._room_freed = asyncio.Event()
        self._waiting_for_room = False
        self._assigned.clear()
        self.failure = None
        self._out_since: float | None = None  # loop time since when it owns no partition
        self._renew = False
        self.stranded: str | None = None
        """Why the member is out of its group while records wait (see the module doc)."""
        self.rejoins = 0

    def subscribe(self, topics: Iterable[str] | str, handler: Handler) -> None:
        """Route `topics` to `handler`: a `HandlerRegistry`, or one async callable (a function,
        or an object with an async `__call__`) run for every event of a type in `events`."""
        if self._loop_task is not None:
            raise RuntimeError("subscribe before start()")
        registry = (handler if isinstance(handler, HandlerRegistry)
                    else HandlerRegistry.for_all(self.events, handler))
        dispatcher = RecordDispatcher(registry, self._idempotency, self._dead_letters,
                                      retry=self._retry, consumer_group=self.group_id,
                                      runtime=self.runtime,
                                      middleware=self._middleware)
        for topic in [topics] if isinstance(topics, str) else topics:
            self._routes[topic] = dispatcher

    @property
    def topics(self) -> list[str]:
        return list(self._routes)

    def lag(self) -> dict[TopicPartitionKey, tuple[int, int | None]]:
        """Per owned partition: its records unfinished here, and how many records are past
        the next one to finish (None while librdkafka knows no position or end). Local state
        only, no broker call (scrape-time metrics); on the loop."""
        client, pending = self._client, self._pending
        owned = list(self._owned)
        ends = client.progress(owned) if client is not None else {}
        result: dict[TopicPartitionKey, tuple[int, int | None]] = {}
        for tp in owned:
            unfinished = pending.get(tp, 0)
            position, end = ends.get(tp, (-1, -1))
            behind = end - position + unfinished if position >= 0 and end >= 0 else None
            result[tp] = (unfinished, behind)
        return result

    @property
    def paused(self) -> int:
        """Partitions paused by back-pressure (see `_flow`)."""
        return len(self._paused)

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    async def start(self) -> None:
        """Make sure the topics exist, join the group, and start consuming.

        Raises `TopicSetupError` when a needed topic is missing and cannot be created."""
        if not self._routes:
            raise RuntimeError("nothing subscribed")
        if self._loop_task is not None:
            raise RuntimeError("already started")
        await self._ensure_topics()
        self._reset()
        self._loop = asyncio.get_running_loop()
        self._out_since = self._loop.time()
        self._client = await self._join()
        self._loop_task = asyncio.create_task(self._run(), name=f"consumer:{self.group_id}")
        self._watch_task = asyncio.create_task(self._watch(), name=f"watch:{self.group_id}")

    async def _join(self) -> KafkaConsumer:
        """A new client subscribed to the topics. Its rebalance callbacks act only while it is
        the current client: one replaced (see `_watch`) can no longer touch the state."""
        client: KafkaConsumer | None = None

        def current() -> bool:
            return client is not None and client is self._client

        client = KafkaConsumer(
            self.config, self.group_id,
            on_assign=lambda tps: self._on_assign(tps) if current() else None,
            on_revoke=lambda tps: self._on_revoke(tps) if current() else {},
            on_lost=lambda tps: self._on_lost(tps) if current() else None,
            **self._kafka_overrides,
        )
        await client.subscribe(self._routes)
        return client

    async def _ensure_topics(self) -> None:
        needed = list(self._routes) if self._create_topics else []
        if isinstance(self._dead_letters, KafkaDeadLetterSink):
            needed += [dlq_topic(t) for t in self._routes]
        await KafkaAdmin(self.config).create_topics(needed)

    async def wait_assigned(self, timeout: float = 30.0) -> None:
        """Until this member owns at least one partition (useful before relying on it)."""
        waiter = asyncio.ensure_future(self._assigned.wait())
        watched = [waiter] + ([self._loop_task] if self._loop_task is not None else [])
        try:
            await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self.failure is not None:
            raise ConsumerFailedError(f"group {self.group_id} failed: {self.failure}")
        if not self._assigned.is_set():
            raise TimeoutError(
                f"group {self.group_id} was assigned no partition of {self.topics} within "
                f"{timeout:g}s: do the topics exist, and are there more members than "
                "partitions?")

    async def _run(self) -> None:
        assert self._client is not None
        client, tracker = self._client, self._tracker
        while not self._stopping:
            try:
                if self._renew:
                    client = await self._rejoin(client)
                pause, resume, room = await self._flow()
                records = await client.poll(min(500, max(1, room)), 0.1, tracker.take(),
                                            pause, resume)
                if records:
                    self._accept(records)
            except asyncio.CancelledError:
                raise
            except ConsumerFailedError as exc:
                log.critical("consumer of group %s stops: %s", self.group_id, exc)
                self.failure = exc
                for task in self._workers.values():
                    task.cancel()
                return
            except Exception:
                log.exception("consumer loop error in group %s; continuing", self.group_id)
                await asyncio.sleep(POLL_ERROR_WAIT)

    async def _watch(self) -> None:
        """Mark the member stranded, and have it rejoin, while it is out of its group and
        records wait (see the module doc). Asks only after a session timeout without
        partitions; a member the group still counts (a spare: more members than partitions)
        is left alone. The records waiting are read through a client of its own, not the
        one that may be stuck."""
        assert self._loop is not None
        loop = self._loop
        while not self._stopping:
            await asyncio.sleep(WATCH_INTERVAL)
            since, client = self._out_since, self._client
            out_for = 0.0 if since is None else loop.time() - since
            if out_for <= self.session_timeout or client is None:
                self.stranded = None
                continue
            try:
                if await client.member_id():
                    self.stranded = None
                    continue
                positions = await self._positions()
            except Exception as exc:  # the broker is away too: nothing to rejoin yet
                log.debug("group %s: lag unknown: %s", self.group_id, exc)
                continue
            waiting = sum(max(0, end - done) for done, end in positions.values())
            if self._out_since is None or not waiting:
                self.stranded = None
                continue
            if self.stranded is None:
                log.error("group %s: this member has been out of its group for %.0fs while "
                          "%d records wait", self.group_id, out_for, waiting)
            self.stranded = (f"out of group {self.group_id} for {out_for:.0f}s with "
                             f"{waiting} records waiting")
            if out_for > self.rejoin_after and not self._renew:
                log.error("group %s: rejoining with a new client after %.0fs out",
                          self.group_id, out_for)
                self._renew = True

    async def _positions(self) -> dict[TopicPartitionKey, tuple[int, int]]:
        if self._inspector is None:
            self._inspector = GroupInspector(self.config, self.group_id)
        return await self._inspector.lag(list(self._routes))

    async def _rejoin(self, old: KafkaConsumer) -> KafkaConsumer:
        """Replace a stranded client: the new one joins as a new member; the old one is
        closed in the background (it owns nothing, so nothing of it is committed)."""
        self._renew = False
        self.rejoins += 1
        assert self._loop is not None
        self._out_since = self._loop.time()
        self._client = await self._join()
        self._closing = asyncio.create_task(self._discard(old))
        return self._client

    async def _discard(self, client: KafkaConsumer) -> None:
        if not await client.abandon(CLOSE_TIMEOUT):
            log.warning("group %s: the replaced client did not close within %.0fs; left to "
                        "its thread", self.group_id, CLOSE_TIMEOUT)

    async def _flow(self) -> tuple[list[TopicPartitionKey], list[TopicPartitionKey], int]:
        """Partitions to pause and to resume before the next poll, and how many records it
        may bring.

        While handlers keep up, a full consumer waits briefly for room, as a plain bounded
        queue would: pausing costs librdkafka its prefetched records, so it is kept for real
        stalls. Only when no room frees up within `STALL_WAIT` are the partitions at their
        share of `max_in_flight` paused, and polling goes on for the rest. A paused partition
        resumes once it has drained to half its share."""
        limit = max(1, self._max_in_flight // max(1, len(self._owned)))
        pending, paused = self._pending, self._paused
        room = self._room()
        if room <= 0:
            self._room_freed.clear()
            self._waiting_for_room = True
            try:
                await asyncio.wait_for(self._room_freed.wait(), STALL_WAIT)
            except TimeoutError:
                pass
            finally:
                self._waiting_for_room = False
            room = self._room()
        pause = []
        if room <= 0:
            pause = [tp for tp in self._owned if tp not in paused and pending.get(tp, 0) >= limit]
            paused.update(pause)
            room = self._room()
        resume = [tp for tp in paused if pending[tp] <= limit // 2]  # paused ones have counts
        paused.difference_update(resume)
        return pause, resume, room

    def _room(self) -> int:
        """Records the next poll may bring: `max_in_flight` less those unfinished on
        partitions that are not paused."""
        paused = self._paused
        busy = sum(n for tp, n in self._pending.items() if tp not in paused)
        return self._max_in_flight - busy

    def _accept(self, records: list[Record]) -> None:
        """Take in one poll's batch in one pass: the records of partitions still owned go to
        their partition's offsets and unfinished count in one step per partition, then to
        their key's lane, in offset order; a lane without a worker gets one task, however
        many of its records the batch holds."""
        owned = self._owned
        by_partition: dict[TopicPartitionKey, list[Record]] = {}
        for record in records:
            tp = (record.topic, record.partition)
            group = by_partition.get(tp)
            if group is not None:
                group.append(record)
            elif tp in owned:
                by_partition[tp] = [record]
        lanes, workers, pending, tracker = self._lanes, self._workers, self._pending, self._tracker
        for tp, group in by_partition.items():
            tracker.partition(tp).received_many([r.offset for r in group])
            pending[tp] = pending.get(tp, 0) + len(group)
            topic, partition = tp
            for record in group:
                lane = (topic, partition, record.key)
                queue = lanes.get(lane)
                if queue is None:
                    queue = lanes[lane] = deque()
                    workers[lane] = asyncio.create_task(self._drain_lane(lane, queue))
                queue.append(record)

    async def _drain_lane(self, lane: Lane, queue: deque[Record]) -> None:
        """Process a lane's records one after another until its queue is empty."""
        process, processed, pending = self._routes[lane[0]].process, self.processed, self._pending
        tp = lane[:2]
        finished = self._tracker.partition(tp).finished
        crashes = 0
        try:
            while queue:
                record = queue[0]
                try:
                    outcome = await process(record)
                except Exception:
                    # A bug, not a handler failure (the dispatcher catches those). The record
                    # stays at the head of its lane, so nothing of its key overtakes it.
                    crashes += 1
                    delay = CRASH_RETRY.delay(min(crashes, 10))
                    log.critical("record %s/%d@%d crashed the dispatcher; its key waits, "
                                 "trying again in %.1fs", record.topic, record.partition,
                                 record.offset, delay, exc_info=True)
                    await asyncio.sleep(delay)
                    continue
                crashes = 0
                queue.popleft()
                processed[outcome] += 1
                finished(record.offset)
                pending[tp] -= 1
                if self._waiting_for_room:
                    self._room_freed.set()
        finally:
            # A lane cut short (revoked, lost, stopped) leaves its records counted in
            # `pending`: the partition's count goes with it (`_forget`), or with the run.
            if self._lanes.get(lane) is queue:
                del self._lanes[lane]
                del self._workers[lane]

    # Rebalance callbacks run on the consumer's own thread, inside poll; they hand the work
    # to the event loop and block that thread until it is done.
    def _on_assign(self, partitions: list[TopicPartitionKey]) -> None:
        assert self._loop is not None
        self._owned.update(partitions)
        if partitions:  # cooperative rebalancing may call with an empty increment first
            self._out_since = None
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

    def _on_lost(self, partitions: list[TopicPartitionKey]) -> None:
        assert self._loop is not None
        log.warning("group %s lost %s; cancelling their handlers", self.group_id, partitions)
        future = asyncio.run_coroutine_threadsafe(self._abandon(partitions), self._loop)
        try:
            future.result()
        except Exception:
            log.exception("abandoning lost partitions failed")

    def _left(self, partitions: set[TopicPartitionKey]) -> None:
        """`partitions` are no longer this member's; with none left it is out of the group."""
        self._owned.difference_update(partitions)
        if not self._owned and self._out_since is None and self._loop is not None:
            self._out_since = self._loop.time()

    async def _drain(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        revoked = set(partitions)
        self._left(revoked)
        await self._finish([w for lane, w in self._workers.items() if lane[:2] in revoked],
                           self._drain_timeout)
        return self._forget(partitions)

    async def _abandon(self, partitions: list[TopicPartitionKey]) -> None:
        lost = set(partitions)
        self._left(lost)
        await self._finish([w for lane, w in self._workers.items() if lane[:2] in lost], 0)
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        for tp in partitions:
            self._paused.discard(tp)
            self._pending.pop(tp, None)
        return self._tracker.forget(partitions)

    @staticmethod
    async def _finish(tasks: list[asyncio.Task[None]], timeout: float) -> None:
        """Let lane workers finish within `timeout`; cancel the rest (their records stay
        uncommitted, so whoever owns the partition next redoes them)."""
        if not tasks:
            return
        late = set(tasks)
        if timeout > 0:
            _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    async def stop(self) -> None:
        """Finish in-flight records within `drain_timeout`, commit, and leave the group.

        A cancellation of the caller is not swallowed: lanes are cancelled, the group is
        left, and the `CancelledError` goes on up."""
        task = self._loop_task
        if task is None or self._client is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._drain_timeout
        self._stopping = True
        watch, self._watch_task = self._watch_task, None
        if watch is not None:
            watch.cancel()
        try:
            await asyncio.wait([task], timeout=self._drain_timeout)
            await self._finish(list(self._workers.values()), deadline - loop.time())
            await self._client.store_offsets(self._tracker.take())
        finally:
            task.cancel()
            for worker in list(self._workers.values()):
                worker.cancel()
            await asyncio.wait([task, *self._workers.values(), *filter(None, [watch])])
            client = self._client  # the run may have replaced it (`_rejoin`)
            assert client is not None
            try:
                if self._closing is not None:
                    closing, self._closing = self._closing, None
                    await closing
                await client.close()
            except Exception:  # a failed consumer may not leave cleanly; it is gone either way
                log.warning("closing the consumer of group %s failed", self.group_id,
                            exc_info=True)
            self._client = None
            self._loop_task = None
            if self._inspector is not None:
                inspector, self._inspector = self._inspector, None
                await inspector.close()
