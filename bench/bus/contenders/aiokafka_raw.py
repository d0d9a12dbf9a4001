"""Raw aiokafka: `AIOKafkaProducer.send` pipelined, `AIOKafkaConsumer.getmany` batches,
JSON bytes encoded/decoded by hand."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]

from bench.bus.contenders.base import OnMessage
from bench.common.payload import decode_raw, encode_raw, make_blob, now_ns


class AiokafkaContender:
    key = "aiokafka"
    label = "aiokafka"
    notes = ("AIOKafkaProducer send()+gather; AIOKafkaConsumer getmany(max_records=500), "
             "fetch_max_wait_ms=100; client default max_batch_size=16 KiB")

    def __init__(self, bootstrap_servers: str, payload_size: int) -> None:
        self._bootstrap = bootstrap_servers
        self._blob = make_blob(payload_size)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start_producer(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, client_id="bench-aiokafka", acks="all",
            enable_idempotence=True, linger_ms=5, compression_type=None,
        )
        await self._producer.start()

    async def stop_producer(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish_all(self, topic: str, count: int) -> None:
        producer = self._producer
        assert producer is not None
        blob = self._blob
        acks = [await producer.send(topic, encode_raw(i, now_ns(), blob)) for i in range(count)]
        await asyncio.gather(*acks)

    async def send(self, topic: str, seq: int) -> Awaitable[object]:
        assert self._producer is not None
        ack: Awaitable[object] = await self._producer.send(
            topic, encode_raw(seq, now_ns(), self._blob))
        return ack

    async def start_consumer(self, topic: str, group: str, on_message: OnMessage) -> None:
        consumer: AIOKafkaConsumer = AIOKafkaConsumer(
            topic, bootstrap_servers=self._bootstrap, client_id="bench-aiokafka",
            group_id=group, auto_offset_reset="earliest", fetch_max_wait_ms=100,
        )
        await consumer.start()

        async def handle(value: bytes | None) -> None:
            body = decode_raw(value)
            on_message(body["seq"], body["sent_ns"])

        async def run() -> None:
            while True:
                batches = await consumer.getmany(timeout_ms=100, max_records=500)
                for records in batches.values():
                    for record in records:
                        await handle(record.value)

        self._consumer = consumer
        self._task = asyncio.create_task(run(), name="aiokafka-consumer")

    async def stop_consumer(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
