"""The only module that imports the Kafka client library (confluent-kafka, i.e. librdkafka).

Why confluent-kafka: `make bench` measures it against aiokafka and FastStream on the same
broker; librdkafka batches, compresses and retries in C threads, so the asyncio loop only pays
for handing records over. Each wrapper here turns librdkafka's threads and callbacks into
awaitables without blocking the event loop:

- `KafkaProducer`: one background thread serves delivery reports; `produce()` returns once
  the broker acknowledged the record (idempotent producer, `acks=all`); `stop()` leaves no
  caller waiting.
- `KafkaConsumer`: every call runs on one dedicated thread, because a librdkafka consumer
  must not be driven from two threads at once; rebalance callbacks run on that thread too.
- `KafkaAdmin`: topic creation and inspection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from core.config import KafkaConfig
from core.messaging.exceptions import (
    ConsumerFailedError,
    DeliveryTimeoutError,
    MessagingError,
    ProducerStoppedError,
    PublishError,
    TopicSetupError,
    UnknownTopicError,
)
from core.messaging.types import Headers, Record

log = logging.getLogger(__name__)
RDKAFKA_LOG = logging.getLogger("librdkafka")
"""librdkafka's own log lines (`%4|...|GETPID|...`) come here instead of raw to stderr."""

TopicPartitionKey = tuple[str, int]
AssignCallback = Callable[[list[TopicPartitionKey]], None]
RevokeCallback = Callable[[list[TopicPartitionKey]], Mapping[TopicPartitionKey, int]]
"""Called before partitions are taken away; returns the next offsets to commit for them."""
LostCallback = Callable[[list[TopicPartitionKey]], None]
"""Called when partitions were lost (another member may own them already): nothing of theirs
may be committed, and work on them should stop at once."""


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """Where the broker stored an acknowledged record."""

    topic: str
    partition: int
    offset: int


def _base(config: KafkaConfig) -> dict[str, Any]:
    return {
        "bootstrap.servers": config.bootstrap_servers,
        "client.id": config.client_id,
        "logger": RDKAFKA_LOG,
        **config.extra,
    }


def _record(msg: Message) -> Record:
    _, timestamp = msg.timestamp()
    return Record(
        topic=msg.topic(),  # type: ignore[arg-type]  # only error events lack these
        partition=msg.partition(),  # type: ignore[arg-type]
        offset=msg.offset(),  # type: ignore[arg-type]
        key=msg.key(),
        value=msg.value(),
        headers=msg.headers() or [],  # type: ignore[arg-type]  # we always send a list
        timestamp_ms=timestamp,
    )


class KafkaProducer:
    """Async, idempotent, keyed producer. Safe to share between tasks of one event loop.

    Records with the same key go to the same partition and, thanks to idempotence, keep the
    order in which `produce` was called even across broker retries.

    Every acknowledgement future resolves: with the broker's answer, or with
    `ProducerStoppedError` for records still unacknowledged when `stop()` gives up on them.
    Once `stop()` has begun, new records are refused with `ProducerStoppedError`.
    """

    DEFAULTS: Mapping[str, Any] = {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "message.timeout.ms": 120_000,
        "queue.buffering.max.messages": 200_000,
    }

    def __init__(self, config: KafkaConfig, **overrides: Any) -> None:
        self._conf = {**_base(config), **self.DEFAULTS, **overrides}
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        # Delivery reports are handed to the loop in batches: one wake-up per batch, not per
        # record, which is what keeps the hand-over cheap at high rates.
        self._reports: deque[tuple[asyncio.Future[DeliveryReport], Any, Any]] = deque()
        self._wakeup_pending = False
        self._wakeup_lock = threading.Lock()
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._stopping = None
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(self._conf)
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="kafka-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._producer is not None
        while self._running:
            self._producer.poll(0.05)

    def _on_delivery(self, fut: asyncio.Future[DeliveryReport], err: Any, msg: Any) -> None:
        self._reports.append((fut, err, msg))
        with self._wakeup_lock:
            if self._wakeup_pending:
                return
            self._wakeup_pending = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._resolve_reports)

    def _resolve_reports(self) -> None:
        with self._wakeup_lock:
            self._wakeup_pending = False
        reports = self._reports
        while reports:
            fut, err, msg = reports.popleft()
            if fut.done():
                continue
            if err is not None:
                fut.set_exception(_publish_error(err, msg.topic()))
            else:
                fut.set_result(DeliveryReport(msg.topic(), msg.partition(), msg.offset()))

    def produce_nowait(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[DeliveryReport]:
        """Queue one record; the future resolves on acknowledgement. Raises BufferError when
        the local queue is full (use `produce`, which waits for room)."""
        if self._producer is None or self._loop is None or self._stopping is not None:
            raise self._not_running()
        fut: asyncio.Future[DeliveryReport] = self._loop.create_future()
        self._producer.produce(
            topic,
            value,
            key,
            headers=headers,  # type: ignore[arg-type]  # list[tuple[str, bytes]] is accepted
            on_delivery=lambda err, msg: self._on_delivery(fut, err, msg),
        )
        return fut

    async def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        headers: Headers | None = None,
    ) -> DeliveryReport:
        """Produce one record and wait for the broker's acknowledgement."""
        return await (await self.enqueue(topic, value, key, headers))

    async def enqueue(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[DeliveryReport]:
        """Queue one record, waiting for room if the local queue is full; returns the
        acknowledgement future without awaiting it, so callers can pipeline."""
        while True:
            try:
                return self.produce_nowait(topic, value, key, headers)
            except BufferError:
                await asyncio.sleep(0.005)
            except KafkaException as exc:
                raise _publish_error(exc.args[0]) from exc

    async def produce_batch(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes | str | None, Headers]]
    ) -> None:
        """Produce `(value, key, headers)` records and return once all are acknowledged.

        One callback object and one future serve the whole batch, which is most of what
        makes this faster than `produce` in a loop. Raises `PublishError` naming the first
        failure; records of the batch that were acknowledged stay published.
        """
        if not records:
            return
        if self._producer is None or self._loop is None or self._stopping is not None:
            raise self._not_running()
        ack = _BatchAck(len(records), self._loop)
        produce = self._producer.produce
        for value, key, headers in records:
            while True:
                try:
                    produce(topic, value, key, headers=headers,  # type: ignore[arg-type]
                            on_delivery=ack)
                    break
                except BufferError:
                    await asyncio.sleep(0.005)  # the local queue is full: let it drain
                    if self._stopping is not None:  # captured `produce` would outlive stop
                        ack.abandon(len(records) - ack.queued)
                        raise self._not_running() from None
                except KafkaException as exc:
                    ack.abandon(len(records) - ack.queued)
                    raise _publish_error(exc.args[0]) from exc
            ack.queued += 1
        await ack.future
        if ack.error is not None:
            raise ack.error

    async def topic_exists(self, topic: str, timeout: float = 5.0) -> bool:
        """Whether the cluster has `topic`, from fresh metadata. Lists every topic rather than
        asking for this one: a request naming a topic would create it on a broker that
        creates topics on first use. Raises MessagingError when no broker answers."""
        if self._producer is None:
            raise MessagingError("producer is not started")
        try:
            meta = await asyncio.to_thread(self._producer.list_topics, timeout=timeout)
        except KafkaException as exc:
            raise MessagingError(f"no topic metadata: {exc}") from exc
        found = meta.topics.get(topic)
        return found is not None and found.error is None

    async def flush(self, timeout: float = 30.0) -> int:
        """Wait until queued records are acknowledged; returns how many are still queued."""
        if self._producer is None:
            return 0
        return int(await asyncio.to_thread(self._producer.flush, timeout))

    async def stop(self, timeout: float = 30.0) -> None:
        """Refuse new records, wait up to `timeout` seconds for queued ones to be
        acknowledged, then fail the rest with `ProducerStoppedError` and close.

        Idempotent, and concurrent calls share one shutdown. Cancelling the caller does not
        cut the shutdown short (it finishes in the background): a half-stopped producer
        would leave acknowledgement futures pending for good.
        """
        if self._producer is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._shut_down(self._producer, timeout),
                                                 name="kafka-producer-stop")
        await asyncio.shield(self._stopping)

    async def _shut_down(self, producer: Producer, timeout: float) -> None:
        remaining = await asyncio.to_thread(producer.flush, timeout)
        if remaining:
            log.error("producer stopping with %d unacknowledged records; failing them",
                      remaining)
            remaining = await asyncio.to_thread(_purge, producer)
            if remaining:
                log.error("producer stopped with %d requests still outstanding", remaining)
        self._running = False
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(producer.poll, 0)  # reports the serving thread did not take
        self._resolve_reports()
        self._producer = None

    def _not_running(self) -> MessagingError:
        if self._stopping is not None:
            return ProducerStoppedError("producer is stopped")
        return MessagingError("producer is not started")


PURGE_TIMEOUT = 5.0
"""How long stop waits for librdkafka to report the records it purged."""


def _purge(producer: Producer) -> int:
    """Drop every record librdkafka still holds, queued or in flight; each gets a delivery
    report with a `_PURGE_*` error, which `_publish_error` turns into `ProducerStoppedError`.
    Returns what is still outstanding after those reports were served."""
    producer.purge(in_queue=True, in_flight=True)
    return int(producer.flush(PURGE_TIMEOUT))


_PERMANENT_ERRORS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG, KafkaError.TOPIC_EXCEPTION, KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError._INVALID_ARG, KafkaError._INVALID_TYPE,
    # A missing topic, with brokers that create none on first use (as in production): a
    # delivery report once librdkafka has waited `topic.metadata.propagation.max.ms` (30 s)
    # for it to appear, then refused at once by produce() until a metadata refresh finds it.
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
})


def _permanent(err: KafkaError) -> bool:
    """Whether resending the record cannot help as things stand. Not `err.retriable()`:
    librdkafka reports a delivery timeout (broker away) as not retriable too, and that one
    heals."""
    return err.code() in _PERMANENT_ERRORS


_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


def _publish_error(err: KafkaError, topic: str | None = None) -> PublishError:
    """The one translation of a refused record into `PublishError`, permanence included."""
    where = f"{topic}: " if topic else ""
    if err.code() in _PURGED:
        # In flight means sent: the broker may have stored it, so not "lost", only unconfirmed.
        return ProducerStoppedError(
            f"{where}the producer stopped before the broker acknowledged the record"
        )
    message = f"{where}{err}"
    if err.code() == KafkaError._MSG_TIMED_OUT:
        return DeliveryTimeoutError(message)
    if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        return UnknownTopicError(message, permanent=True)
    return PublishError(message, permanent=_permanent(err))


class _BatchAck:
    """Counts a batch's delivery reports on the producer's thread; resolves one future.

    Two threads meet here, so each counter has one writer: `reported` is written only by
    librdkafka's thread, `expected` only by the loop's (`abandon`). A shared `remaining -= n`
    from both could lose an update and leave the batch waiting for good; a lock would cost
    each record more than the rest of its callback.
    """

    __slots__ = ("error", "expected", "future", "loop", "queued", "reported")

    def __init__(self, size: int, loop: asyncio.AbstractEventLoop) -> None:
        self.expected = size
        self.reported = 0
        self.queued = 0
        self.error: PublishError | None = None
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None and self.error is None:
            self.error = _publish_error(err, msg.topic())
        self.reported += 1
        if self.reported == self.expected:
            self.loop.call_soon_threadsafe(self._resolve)

    def abandon(self, count: int) -> None:
        """`count` records will never be produced; stop waiting for them. On the loop.

        Whichever side moves last sees both counters agree (the loop writes `expected` then
        reads `reported`; the reporter writes `reported` then reads `expected`), so the
        future is resolved at least once, and `_resolve` tolerates twice."""
        self.expected -= count
        if self.reported >= self.expected:
            self._resolve()

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class KafkaConsumer:
    """A group member that polls in batches and stores offsets only when told to.

    Auto-commit is on, but librdkafka commits only offsets stored through `store_offsets`,
    which the caller does after a record's work is durable: that is at-least-once delivery
    with a commit at most `auto.commit.interval.ms` behind. Every librdkafka call runs on one
    dedicated thread, so the callbacks given for rebalances run there too and may block it.
    """

    DEFAULTS: Mapping[str, Any] = {
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 500,
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "max.poll.interval.ms": 300_000,
        "fetch.wait.max.ms": 100,
    }

    def __init__(
        self,
        config: KafkaConfig,
        group_id: str,
        *,
        on_assign: AssignCallback | None = None,
        on_revoke: RevokeCallback | None = None,
        on_lost: LostCallback | None = None,
        **overrides: Any,
    ) -> None:
        self._conf = {
            **_base(config),
            **self.DEFAULTS,
            "group.id": group_id,
            "auto.offset.reset": config.auto_offset_reset,
            **overrides,
        }
        self.group_id = group_id
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-consumer")
        self._consumer: Consumer | None = None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def subscribe(self, topics: Iterable[str]) -> None:
        await self._call(self._subscribe, list(topics))

    def _subscribe(self, topics: list[str]) -> None:
        self._consumer = Consumer(self._conf)
        self._consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked,
                                 on_lost=self._lost)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._on_assign is not None:
            self._on_assign([(p.topic, p.partition) for p in partitions])

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._on_revoke is None:
            return
        offsets = self._on_revoke([(p.topic, p.partition) for p in partitions])
        if offsets:
            consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            )
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._NO_OFFSET:
                    log.warning("commit on revoke failed: %s", exc)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: another member may already own them, so nothing may be committed.
        if self._on_lost is not None:
            self._on_lost([(p.topic, p.partition) for p in partitions])

    async def poll(
        self,
        max_records: int = 500,
        timeout: float = 0.1,
        store: Mapping[TopicPartitionKey, int] | None = None,
        pause: Iterable[TopicPartitionKey] = (),
        resume: Iterable[TopicPartitionKey] = (),
    ) -> list[Record]:
        """Up to `max_records` records, as soon as at least one is there (or [] after
        `timeout`). `store` offsets are stored and `pause` / `resume` applied first, in the
        same trip to the consumer thread: one hop per poll keeps the loop's overhead low.

        Raises `ConsumerFailedError` on an error the consumer cannot recover from."""
        records = await self._call(self._poll, max_records, timeout, store, pause, resume)
        return records  # type: ignore[no-any-return]

    def _poll(
        self,
        max_records: int,
        timeout: float,
        store: Mapping[TopicPartitionKey, int] | None,
        pause: Iterable[TopicPartitionKey],
        resume: Iterable[TopicPartitionKey],
    ) -> list[Record]:
        try:
            return self._poll_once(max_records, timeout, store, pause, resume)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and _consumer_failed(err):
                raise ConsumerFailedError(f"group {self.group_id}: {err}") from exc
            raise

    def _poll_once(
        self,
        max_records: int,
        timeout: float,
        store: Mapping[TopicPartitionKey, int] | None,
        pause: Iterable[TopicPartitionKey],
        resume: Iterable[TopicPartitionKey],
    ) -> list[Record]:
        assert self._consumer is not None
        if store:
            self._store(store)
        if pause:
            self._consumer.pause([TopicPartition(t, p) for t, p in pause])
        if resume:
            self._consumer.resume([TopicPartition(t, p) for t, p in resume])
        # Wait for the first record only, then take what is already fetched: a batch call with
        # a timeout would sit out the whole timeout whenever fewer than max_records arrive.
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        messages = [first]
        if max_records > 1:
            messages.extend(self._consumer.consume(max_records - 1, 0))
        records = []
        for msg in messages:
            err = msg.error()
            if err is None:
                records.append(_record(msg))
            elif _consumer_failed(err):
                raise KafkaException(err)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error in group %s: %s", self.group_id, err)
        return records

    async def store_offsets(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """Mark `offsets` (the next offset to read, per partition) as safe to commit."""
        if offsets:
            await self._call(self._store, dict(offsets))

    def _store(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        assert self._consumer is not None
        try:
            self._consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            )
        except KafkaException as exc:
            # Storing for a partition we no longer own fails; its new owner will redo it.
            log.info("could not store offsets %s: %s", offsets, exc)

    async def close(self) -> None:
        """Commit stored offsets and leave the group."""
        if self._consumer is not None:
            await self._call(self._consumer.close)
            self._consumer = None
        self._executor.shutdown(wait=True)


_CONSUMER_FAILURES = frozenset({
    KafkaError._FATAL, KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.INVALID_GROUP_ID, KafkaError.FENCED_INSTANCE_ID, KafkaError._FENCED,
    KafkaError.UNSUPPORTED_SASL_MECHANISM, KafkaError.ILLEGAL_SASL_STATE,
})


def _consumer_failed(err: KafkaError) -> bool:
    """Whether a consumer error will not heal by itself: librdkafka's fatal errors, and the
    ones that need someone to change credentials, ACLs or the group's configuration."""
    return bool(err.fatal()) or err.code() in _CONSUMER_FAILURES


class KafkaAdmin:
    """Topic management; every call is idempotent where Kafka allows it."""

    def __init__(self, config: KafkaConfig) -> None:
        self._admin = AdminClient(_base(config))
        self._config = config

    async def create_topics(
        self,
        topics: Iterable[str],
        partitions: int | None = None,
        replication_factor: int | None = None,
        configs: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Create the topics that do not exist yet; existing ones are left as they are.

        Partitions and replication default to the config's. Raises `TopicSetupError`, naming
        the topic and the reason, when one cannot be created within `timeout` seconds (the
        broker away, not authorized, a replication factor above the broker count)."""
        new = [
            NewTopic(t, num_partitions=partitions or self._config.topic_partitions,
                     replication_factor=replication_factor
                     or self._config.topic_replication_factor,
                     config=dict(configs or {}))
            for t in topics
        ]
        if not new:
            return
        futures = await asyncio.to_thread(self._admin.create_topics, new,
                                          operation_timeout=timeout, request_timeout=timeout)
        for topic, fut in futures.items():
            try:
                await asyncio.wait_for(asyncio.wrap_future(fut), timeout + 5)
            except TimeoutError:
                raise TopicSetupError(
                    f"cannot create topic {topic}: no answer from Kafka at "
                    f"{self._config.bootstrap_servers} within {timeout:g}s") from None
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicSetupError(f"cannot create topic {topic}: {exc}") from exc

    async def topics(self) -> dict[str, int]:
        """Topic name to partition count."""
        meta = await asyncio.to_thread(self._admin.list_topics, timeout=10)
        return {name: len(t.partitions) for name, t in meta.topics.items()}

    async def delete_topics(self, topics: Iterable[str]) -> None:
        futures = await asyncio.to_thread(self._admin.delete_topics, list(topics))
        for fut in futures.values():
            try:
                await asyncio.wrap_future(fut)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise


async def read_topic(config: KafkaConfig, topic: str, timeout: float = 10.0) -> list[Record]:
    """Every record currently in `topic`, oldest first per partition, without joining a group
    or committing anything: for tools that inspect a topic (dead letters, say)."""
    return await asyncio.to_thread(_read_topic, config, topic, timeout)


def _read_topic(config: KafkaConfig, topic: str, timeout: float) -> list[Record]:
    consumer = Consumer({**_base(config), "group.id": f"{config.client_id}-reader",
                         "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        ends: dict[int, int] = {}
        assignment = []
        for partition in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=timeout)
            if high > low:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        consumer.assign(assignment)
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is not None:
                    continue
                record = _record(msg)
                records.append(record)
                if record.offset + 1 >= ends.get(record.partition, 0):
                    ends.pop(record.partition, None)
        return records
    finally:
        consumer.close()


async def committed_offsets(config: KafkaConfig, group: str, topic: str) -> dict[int, int]:
    """The group's committed next-offset per partition of `topic` (partitions without one
    are left out)."""
    return await asyncio.to_thread(_committed_offsets, config, group, topic)


def _committed_offsets(config: KafkaConfig, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({**_base(config), "group.id": group, "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        parts = [TopicPartition(topic, p) for p in meta.partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)
                if tp.offset >= 0}
    finally:
        consumer.close()


async def commit_offsets(
    config: KafkaConfig, group: str, topic: str, offsets: Mapping[int, int]
) -> None:
    """Commit next-offsets per partition for `group` without joining it (tools only)."""
    await asyncio.to_thread(_commit_offsets, config, group, topic, dict(offsets))


def _commit_offsets(config: KafkaConfig, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({**_base(config), "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                        asynchronous=False)
    finally:
        consumer.close()


async def group_lag(config: KafkaConfig, group: str, topic: str) -> dict[int, int]:
    """Records per partition of `topic` that `group` has not committed yet (a partition the
    group never committed counts from its low watermark)."""
    return await asyncio.to_thread(_group_lag, config, group, topic)


def _group_lag(config: KafkaConfig, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({**_base(config), "group.id": group, "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        parts = [TopicPartition(topic, p) for p in meta.partitions]
        committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
        lag = {}
        for tp in parts:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            done = committed.get(tp.partition, -1)
            lag[tp.partition] = high - (done if done >= 0 else low)
        return lag
    finally:
        consumer.close()


async def group_member_counts(config: KafkaConfig, groups: Iterable[str]) -> dict[str, int]:
    """Active members per consumer group; a group that does not exist (or has no members
    left) counts 0. Groups the broker could not describe are left out: unknown is not
    empty, and callers deciding to delete something must not mistake the one for the other.
    """
    wanted = list(groups)
    if not wanted:
        return {}
    return await asyncio.to_thread(_group_member_counts, config, wanted)


def _group_member_counts(config: KafkaConfig, groups: list[str]) -> dict[str, int]:
    admin = AdminClient(_base(config))
    counts: dict[str, int] = {}
    for group, fut in admin.describe_consumer_groups(groups, request_timeout=10).items():
        try:
            counts[group] = len(fut.result().members)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
                counts[group] = 0
            else:
                log.warning("cannot describe consumer group %s: %s", group, exc)
    return counts
