"""FastStream's Kafka broker (aiokafka underneath), used the way its docs show:
`broker.publish(model, topic)` and `@broker.subscriber(topic, group_id=...)` with a
pydantic-typed handler.

Its per-message INFO log lines ("Received" / "Processed") are turned off (logged at DEBUG to a
logger set to WARNING): the core bus logs nothing per message either.
"""

# No `from __future__ import annotations`: FastStream reads the handler's annotation at runtime.

import asyncio
import logging
from collections.abc import Awaitable

from faststream.kafka import KafkaBroker

from bench.bus.contenders.base import OnMessage
from bench.common.payload import Payload, make_blob, now_ns

# FastStream's own lifecycle lines (assignments, shutdown) stay out of the bench output.
QUIET = logging.getLogger("bench.faststream")
QUIET.setLevel(logging.WARNING)


class FastStreamContender:
    key = "faststream"
    label = "FastStream"
    notes = ("faststream.kafka.KafkaBroker; publish(no_confirm=True) + gather for throughput; "
             "default subscriber (getone, ACK_FIRST); its logger quieted to WARNING")

    def __init__(self, bootstrap_servers: str, payload_size: int) -> None:
        self._bootstrap = bootstrap_servers
        self._blob = make_blob(payload_size)
        self._publisher: KafkaBroker | None = None
        self._consumer: KafkaBroker | None = None

    def _broker(self) -> KafkaBroker:
        return KafkaBroker(
            self._bootstrap, client_id="bench-faststream", acks="all", enable_idempotence=True,
            linger_ms=5, compression_type=None, log_level=logging.DEBUG, logger=QUIET,
        )

    async def start_producer(self) -> None:
        self._publisher = self._broker()
        await self._publisher.start()

    async def stop_producer(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None

    async def publish_all(self, topic: str, count: int) -> None:
        broker = self._publisher
        assert broker is not None
        blob = self._blob
        acks = [
            await broker.publish(Payload(seq=i, sent_ns=now_ns(), blob=blob), topic,
                                 no_confirm=True)
            for i in range(count)
        ]
        await asyncio.gather(*acks)

    async def send(self, topic: str, seq: int) -> Awaitable[object]:
        assert self._publisher is not None
        return await self._publisher.publish(
            Payload(seq=seq, sent_ns=now_ns(), blob=self._blob), topic, no_confirm=True
        )

    async def start_consumer(self, topic: str, group: str, on_message: OnMessage) -> None:
        broker = self._broker()

        @broker.subscriber(topic, group_id=group, auto_offset_reset="earliest",
                           fetch_max_wait_ms=100)
        async def handle(msg: Payload) -> None:
            on_message(msg.seq, msg.sent_ns)

        await broker.start()
        self._consumer = broker

    async def stop_consumer(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
