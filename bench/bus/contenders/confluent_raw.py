"""Raw confluent-kafka (librdkafka): `Producer.produce` with a delivery callback served by
a poll thread, `Consumer.poll` + `consume(n, 0)` on one executor thread, JSON by hand.

The consumer blocks in `poll()` for the first record and then drains what is already
buffered with `consume(499, timeout=0)`: librdkafka's `consume(n, timeout)` waits until it has
`n` records or the timeout expired, which a latency-minded raw user avoids.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, Message, Producer

from bench.bus.contenders.base import OnMessage
from bench.common.payload import decode_raw, encode_raw, make_blob, now_ns

PRODUCER_SETTINGS = {
    "enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.type": "none",
    "batch.num.messages": 10000, "queue.buffering.max.messages": 200_000,
}
"""What core's `KafkaProducer` sets, so the raw producers batch and buffer alike."""


class ConfluentContender:
    key = "confluent"
    label = "confluent"
    notes = ("Producer.produce()+flush() for throughput; poll thread resolves delivery "
             "futures; Consumer poll()+consume(499, 0) batches on one thread, "
             "fetch.wait.max.ms=100")

    def __init__(self, bootstrap_servers: str, payload_size: int) -> None:
        self._bootstrap = bootstrap_servers
        self._blob = make_blob(payload_size)
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._polling = False
        self._errors: list[Any] = []
        self._consumer: Consumer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._consuming = False

    async def start_producer(self) -> None:
        self._producer = Producer({"bootstrap.servers": self._bootstrap,
                                   "client.id": f"bench-{self.key}", **PRODUCER_SETTINGS})
        self._polling = True
        self._poller = threading.Thread(target=self._poll_loop, name="bench-confluent-poll",
                                        daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        assert self._producer is not None
        while self._polling:
            self._producer.poll(0.05)

    async def stop_producer(self) -> None:
        if self._producer is None:
            return
        await asyncio.to_thread(self._producer.flush, 30)
        self._polling = False
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
        self._producer = None
        if self._errors:
            raise RuntimeError(f"{len(self._errors)} deliveries failed: {self._errors[0]}")

    def _count_error(self, err: Any, msg: Message) -> None:
        if err is not None:
            self._errors.append(err)

    def _produce(self, topic: str, value: bytes, callback: Any) -> None:
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(topic, value, on_delivery=callback)
                return
            except BufferError:
                self._producer.poll(0.005)  # local queue full: let deliveries drain

    def encode(self, seq: int) -> bytes:
        """One record's value, stamped now: JSON by hand (the typed floor overrides this)."""
        return encode_raw(seq, now_ns(), self._blob)

    def decode(self, value: bytes | None) -> tuple[int, int]:
        """(seq, sent_ns) from one record's value."""
        body = decode_raw(value)
        return body["seq"], body["sent_ns"]

    async def publish_all(self, topic: str, count: int) -> None:
        assert self._producer is not None
        encode, callback = self.encode, self._count_error
        for i in range(count):
            self._produce(topic, encode(i), callback)
        remaining = await asyncio.to_thread(self._producer.flush, 60)
        if remaining or self._errors:
            raise RuntimeError(f"{remaining} unacknowledged, {len(self._errors)} failed")

    async def send(self, topic: str, seq: int) -> Awaitable[object]:
        loop = asyncio.get_running_loop()
        ack: asyncio.Future[None] = loop.create_future()

        def delivered(err: Any, msg: Message) -> None:
            if err is not None:
                loop.call_soon_threadsafe(ack.set_exception, RuntimeError(str(err)))
            else:
                loop.call_soon_threadsafe(ack.set_result, None)

        self._produce(topic, self.encode(seq), delivered)
        return ack

    async def start_consumer(self, topic: str, group: str, on_message: OnMessage) -> None:
        consumer = Consumer({
            "bootstrap.servers": self._bootstrap, "client.id": f"bench-{self.key}",
            "group.id": group, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
        })
        self._consumer = consumer
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-confluent")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, consumer.subscribe, [topic])

        def fetch() -> list[Message]:
            first = consumer.poll(0.1)
            if first is None:
                return []
            return [first, *consumer.consume(499, 0)]

        decode = self.decode

        async def handle(value: bytes | None) -> None:
            on_message(*decode(value))

        async def run() -> None:
            while self._consuming:
                for msg in await loop.run_in_executor(self._executor, fetch):
                    if msg.error() is None:
                        await handle(msg.value())

        self._consuming = True
        self._task = asyncio.create_task(run(), name="confluent-consumer")

    async def stop_consumer(self) -> None:
        self._consuming = False
        if self._task is not None:
            await self._task
            self._task = None
        if self._consumer is not None and self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor,
                                                             self._consumer.close)
            self._executor.shutdown(wait=True)
        self._consumer = None
        self._executor = None
