"""What the console reads from and writes to Kafka: dead letters (through `core.messaging.dlq`,
the same listing and replay as `python -m core dlq`), and the audit events of replays.

The producer (a publishing-only event bus) starts at the first replay, so a gateway whose
Kafka is away still serves every other console page and all its traffic."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from core.config import KafkaConfig
from core.messaging import (
    EventRegistry,
    EventSerializer,
    KafkaAdmin,
    KafkaEventBus,
    read_topic,
)
from core.messaging import dlq as dlqs  # the same listing and replay as `python -m core dlq`
from gateway.console.events import GATEWAY_EVENTS, DeadLetterReplayed, DeadLetterReplayedData


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter with the console replays recorded for it (newest last)."""

    letter: dlqs.DeadLetter
    replays: list[DeadLetterReplayedData]


class ConsoleKafka:
    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        registry = EventRegistry()
        registry.register(DeadLetterReplayed)
        self._registry = registry
        self._serializer = EventSerializer(registry, service_name="gateway")
        self._bus: KafkaEventBus | None = None
        self._kafka_admin: KafkaAdmin | None = None
        self._starting = asyncio.Lock()

    async def dlq_topics(self) -> dict[str, int]:
        """Original topic -> partitions of its `.dlq` topic, for every DLQ topic there is."""
        topics = await self._admin().topics()
        return {name.removesuffix(dlqs.DLQ_SUFFIX): parts for name, parts in sorted(
            topics.items()) if name.endswith(dlqs.DLQ_SUFFIX)}

    async def letters(self, topic: str) -> list[Letter]:
        letters, audit = await asyncio.gather(dlqs.list_dead_letters(self.config, topic),
                                              self.replays(topic))
        return [Letter(x, audit.get((x.record.partition, x.record.offset), []))
                for x in letters]

    async def replays(self, topic: str) -> dict[tuple[int, int], list[DeadLetterReplayedData]]:
        """The console's replays of `topic`'s dead letters, by (partition, offset)."""
        found: dict[tuple[int, int], list[DeadLetterReplayedData]] = {}
        for record in await read_topic(self.config, GATEWAY_EVENTS):
            if record.header("event_type") != DeadLetterReplayed.EVENT_TYPE:
                continue
            event = self._serializer.deserialize(record.value, record.headers)
            assert isinstance(event, DeadLetterReplayed)
            if event.data.topic == topic:
                key = (event.data.dlq_partition, event.data.dlq_offset)
                found.setdefault(key, []).append(event.data)
        return found

    async def replay(self, topic: str, partition: int, offset: int, *, by: str,
                     by_name: str) -> dlqs.DeadLetter | None:
        """Send one dead letter back to `topic` (`dlq.replay` with an explicit pick), then
        record who did it. None when there is no such letter."""
        bus = await self._started()
        done = await dlqs.replay(self.config, bus.producer, topic,
                                 offsets=[(partition, offset)])
        if not done:
            return None
        letter = done[0]
        event = DeadLetterReplayed(key=f"{topic}/{partition}/{offset}", data=DeadLetterReplayedData(
            topic=topic, dlq_partition=partition, dlq_offset=offset,
            event_type=letter.event_type, event_id=letter.event_id, by=by, by_name=by_name))
        await bus.publish(GATEWAY_EVENTS, event)
        return letter

    def _admin(self) -> KafkaAdmin:
        if self._kafka_admin is None:
            self._kafka_admin = KafkaAdmin(self.config)
        return self._kafka_admin

    async def _started(self) -> KafkaEventBus:
        async with self._starting:
            if self._bus is None:
                await self._admin().create_topics([GATEWAY_EVENTS])  # once; idempotent
                bus = KafkaEventBus(self.config, self._registry)
                await bus.start()
                self._bus = bus
            return self._bus

    async def stop(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            await bus.stop()
