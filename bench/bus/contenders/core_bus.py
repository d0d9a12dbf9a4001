"""Our core event bus: real `IntegrationEvent`s through `KafkaEventBus`.

Publishing pays for what every service pays: building the event (envelope: id, timestamp),
pydantic JSON serialization and the event headers. Consuming runs the full dispatch path
(decode by header, upcast check, idempotency store, per-key lanes, offset tracking).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from bench.bus.contenders.base import OnMessage
from bench.common.payload import BenchEvent, Payload, make_blob, now_ns
from core.config import KafkaConfig
from core.messaging.event_bus import KafkaEventBus


class CoreContender:
    key = "core"
    label = "core"
    notes = ("KafkaEventBus (confluent-kafka underneath); publish_many for throughput, "
             "publish() for latency; default consumer (max_in_flight=1000)")

    def __init__(self, bootstrap_servers: str, payload_size: int) -> None:
        self._bootstrap = bootstrap_servers
        self._blob = make_blob(payload_size)
        self._publisher: KafkaEventBus | None = None
        self._consumer: KafkaEventBus | None = None

    def _bus(self, group: str) -> KafkaEventBus:
        bus = KafkaEventBus(KafkaConfig(bootstrap_servers=self._bootstrap, client_id="bench-core",
                                        consumer_group=group))
        bus.events.register(BenchEvent)
        return bus

    def _event(self, seq: int) -> BenchEvent:
        return BenchEvent(data=Payload(seq=seq, sent_ns=now_ns(), blob=self._blob))

    async def start_producer(self) -> None:
        self._publisher = self._bus("bench-core-publisher")
        await self._publisher.start()

    async def stop_producer(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None

    async def publish_all(self, topic: str, count: int) -> None:
        assert self._publisher is not None
        await self._publisher.publish_many(topic, [self._event(i) for i in range(count)])

    async def send(self, topic: str, seq: int) -> Awaitable[object]:
        assert self._publisher is not None
        return asyncio.ensure_future(self._publisher.publish(topic, self._event(seq)))

    async def start_consumer(self, topic: str, group: str, on_message: OnMessage) -> None:
        bus = self._bus(group)

        async def handle(event: BenchEvent) -> None:
            on_message(event.data.seq, event.data.sent_ns)

        bus.subscribe(topic, handle)
        await bus.start()
        self._consumer = bus

    async def stop_consumer(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
