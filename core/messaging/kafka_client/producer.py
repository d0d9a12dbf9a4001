"""`KafkaProducer`: an async, idempotent, keyed producer whose `stop()` leaves no caller waiting."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import (
    KafkaException,
    Producer,
)

from core.config import KafkaConfig
from core.messaging.errors import (
    MessagingError,
    ProducerStoppedError,
    PublishError,
)
from core.messaging.kafka_client import _clients
from core.messaging.kafka_client._common import (
    DeliveryReport,
    _base,
)
from core.messaging.kafka_client.errors import _publish_error
from core.messaging.kafka_client.metadata import MetadataClient, MetadataReader
from core.messaging.types import Headers
from core.tracing import kafka as tracing

log = logging.getLogger(__name__)

DeliveryObserver = Callable[[Any, Any, Headers | None], None]
"""Called with librdkafka's (error or None, message) and the headers the record was sent
with (a delivery report carries none) for every delivery report, on the producer's thread
(metrics: `core.metrics`); it must be quick and must not raise."""


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
        self._metadata_conf = {**_base(config), "client.id": f"{config.client_id}-metadata"}
        self._producer: Producer | None = None
        self._metadata: MetadataReader | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        # Delivery reports are handed to the loop in batches: one wake-up per batch, not per
        # record, which is what keeps the hand-over cheap at high rates.
        self._reports: deque[tuple[asyncio.Future[DeliveryReport], Any, Any]] = deque()
        self._wakeup_pending = False
        self._wakeup_lock = threading.Lock()
        self._stopping: asyncio.Task[None] | None = None
        self.on_delivery: DeliveryObserver | None = None
        """See `DeliveryObserver`; set before the first record. None costs nothing."""

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._stopping = None
        self._loop = asyncio.get_running_loop()
        self._producer = _clients.producer(self._conf)
        self._metadata = MetadataReader(self._producer, self._metadata_client)
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
        the local queue is full (use `produce`, which waits for room). Inside a trace, the
        record carries a PRODUCER span of its own (`core.tracing.kafka`)."""
        return tracing.traced_send(self._queue, topic, value, key, headers)

    def _queue(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None,
        headers: Headers | None,
    ) -> asyncio.Future[DeliveryReport]:
        if self._producer is None or self._loop is None or self._stopping is not None:
            raise self._not_running()
        fut: asyncio.Future[DeliveryReport] = self._loop.create_future()
        observer = self.on_delivery

        def delivered(err: Any, msg: Any) -> None:
            if observer is not None:
                observer(err, msg, headers)
            self._on_delivery(fut, err, msg)

        self._producer.produce(
            topic,
            value,
            key,
            headers=headers,  # type: ignore[arg-type]  # list[tuple[str, bytes]] is accepted
            on_delivery=delivered,
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
        failure; records of the batch that were acknowledged stay published. Inside a
        trace, each record carries a PRODUCER span of its own (`core.tracing.kafka`).
        """
        await tracing.traced_batch(self._produce_batch, topic, records)

    async def _produce_batch(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes | str | None, Headers]]
    ) -> None:
        if not records:
            return
        if self._producer is None or self._loop is None or self._stopping is not None:
            raise self._not_running()
        ack = _BatchAck(len(records), self._loop)
        produce, observer = self._producer.produce, self.on_delivery
        for value, key, headers in records:
            while True:
                try:
                    produce(
                        topic,
                        value,
                        key,
                        headers=headers,  # type: ignore[arg-type]
                        # One shared callback, unless observed: the observer needs each
                        # record's headers.
                        on_delivery=ack if observer is None else _observed(ack, observer,
                                                                           headers),
                    )
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
        if self._producer is None or self._metadata is None:
            raise MessagingError("producer is not started")
        try:
            meta = await self._metadata.list_topics(timeout)
        except KafkaException as exc:
            raise MessagingError(f"no topic metadata: {exc}") from exc
        found = meta.topics.get(topic)
        return found is not None and found.error is None

    def _metadata_client(self) -> MetadataClient:
        """A client for metadata alone, made when the producer's own stops answering (see
        `core.messaging.kafka_client.metadata`)."""
        return _clients.admin(self._metadata_conf)

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
            self._stopping = asyncio.create_task(
                self._shut_down(self._producer, timeout), name="kafka-producer-stop"
            )
        await asyncio.shield(self._stopping)

    async def _shut_down(self, producer: Producer, timeout: float) -> None:
        remaining = await asyncio.to_thread(producer.flush, timeout)
        if remaining:
            log.error("producer stopping with %d unacknowledged records; failing them", remaining)
            remaining = await asyncio.to_thread(_purge, producer)
            if remaining:
                log.error("producer stopped with %d requests still outstanding", remaining)
        self._running = False
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(producer.poll, 0)  # reports the serving thread did not take
        self._resolve_reports()
        self._producer = None
        self._metadata = None

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


def _observed(ack: _BatchAck, observer: DeliveryObserver, headers: Headers
              ) -> Callable[[Any, Any], None]:
    def delivered(err: Any, msg: Any) -> None:
        observer(err, msg, headers)
        ack(err, msg)

    return delivered


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
