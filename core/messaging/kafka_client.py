"""The only module that imports the Kafka client library (confluent-kafka, i.e. librdkafka).

Why confluent-kafka: `make bench` measures it against aiokafka and FastStream on the same
broker; librdkafka batches, compresses and retries in C threads, so the asyncio loop only pays
for handing records over. Each wrapper here turns librdkafka's threads and callbacks into
awaitables without blocking the event loop:

- `KafkaProducer`: one background thread serves delivery reports; `produce()` returns once
  the broker acknowledged the record (idempotent producer, `acks=all`).
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
    DeliveryTimeoutError,
    MessagingError,
    PublishError,
    UnknownTopicError,
)
from core.messaging.types import Headers, Record

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
AssignCallback = Callable[[list[TopicPartitionKey]], None]
RevokeCallback = Callable[[list[TopicPartitionKey]], Mapping[TopicPartitionKey, int]]
"""Called before partitions are taken away; returns the next offsets to commit for them."""


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

    async def start(self) -> None:
        if self._producer is not None:
            return
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
        if self._producer is None or self._loop is None:
            raise MessagingError("producer is not started")
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
        if self._producer is None or self._loop is None:
            raise MessagingError("producer is not started")
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
        if self._producer is None:
            return
        remaining = await self.flush(timeout)
        if remaining:
            log.error("producer stopped with %d unacknowledged records", remaining)
        self._running = False
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self._resolve_reports()
        self._producer = None


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


def _publish_error(err: KafkaError, topic: str | None = None) -> PublishError:
    """The one translation of a refused record into `PublishError`, permanence included."""
    message = f"{topic}: {err}" if topic else str(err)
    if err.code() == KafkaError._MSG_TIMED_OUT:
        return DeliveryTimeoutError(message)
    if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        return UnknownTopicError(message, permanent=True)
    return PublishError(message, permanent=_permanent(err))


class _BatchAck:
    """Counts a batch's delivery reports on the producer's thread; resolves one future."""

    __slots__ = ("error", "future", "loop", "queued", "remaining")

    def __init__(self, size: int, loop: asyncio.AbstractEventLoop) -> None:
        self.remaining = size
        self.queued = 0
        self.error: PublishError | None = None
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None and self.error is None:
            self.error = _publish_error(err, msg.topic())
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self._resolve)

    def abandon(self, count: int) -> None:
        """`count` records will never be produced; stop waiting for them."""
        self.loop.call_soon_threadsafe(self._discount, count)

    def _discount(self, count: int) -> None:
        self.remaining -= count
        if self.remaining <= 0:
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
        if self._on_revoke is not None:
            self._on_revoke([(p.topic, p.partition) for p in partitions])

    async def poll(
        self,
        max_records: int = 500,
        timeout: float = 0.1,
        store: Mapping[TopicPartitionKey, int] | None = None,
    ) -> list[Record]:
        """Up to `max_records` records, as soon as at least one is there (or [] after
        `timeout`). `store` offsets are stored first, in the same trip to the consumer
        thread: one hop per poll keeps the loop's overhead low."""
        records = await self._call(self._poll, max_records, timeout, store)
        return records  # type: ignore[no-any-return]

    def _poll(
        self, max_records: int, timeout: float, store: Mapping[TopicPartitionKey, int] | None
    ) -> list[Record]:
        assert self._consumer is not None
        if store:
            self._store(store)
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
            elif err.fatal():
                raise KafkaException(err)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
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


class KafkaAdmin:
    """Topic management; every call is idempotent where Kafka allows it."""

    def __init__(self, config: KafkaConfig) -> None:
        self._admin = AdminClient(_base(config))

    async def create_topics(
        self,
        topics: Iterable[str],
        partitions: int = 3,
        replication_factor: int = 1,
        configs: Mapping[str, str] | None = None,
    ) -> None:
        """Create the topics that do not exist yet; existing ones are left as they are."""
        new = [
            NewTopic(t, num_partitions=partitions, replication_factor=replication_factor,
                     config=dict(configs or {}))
            for t in topics
        ]
        if not new:
            return
        futures = await asyncio.to_thread(self._admin.create_topics, new, operation_timeout=30)
        for topic, fut in futures.items():
            try:
                await asyncio.wrap_future(fut)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise MessagingError(f"cannot create topic {topic}: {exc}") from exc

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
