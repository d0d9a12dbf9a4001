"""Three brokers, replication factor 3, min.insync.replicas 2: losing the partition leader
during a stream of acknowledged publishes loses none of them."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka.admin import AdminClient

from core.config import KafkaConfig
from core.messaging.event_bus import KafkaEventBus
from core.messaging.kafka_client import KafkaAdmin
from core.messaging.types import MessageContext
from tests.helpers import OrderPlaced, eventually, order_registry, placed, unique

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]


def _leader(bootstrap: str, topic: str) -> int:
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return int(meta.topics[topic].partitions[0].leader)


async def test_killing_the_leader_loses_no_acknowledged_event(kafka_cluster) -> None:
    config = KafkaConfig(kafka_cluster.bootstrap_servers, unique("client"), unique("group"))
    topic = unique("failover")
    await KafkaAdmin(config).create_topics([topic], partitions=1, replication_factor=3,
                                           configs={"min.insync.replicas": "2"})
    consumed: set[str] = set()

    async def collect(event: OrderPlaced, ctx: MessageContext) -> None:
        consumed.add(str(event.event_id))

    bus = KafkaEventBus(config, order_registry())
    bus.subscribe(topic, collect)
    await bus.start()
    try:
        await bus.consumers[config.consumer_group].wait_assigned(60)
        acknowledged: list[str] = []
        leader = await asyncio.to_thread(_leader, kafka_cluster.bootstrap_servers, topic)
        for i in range(600):
            if i == 200:
                await asyncio.to_thread(kafka_cluster.broker(leader).kill)
            event = placed(f"o-{i % 10}", seq=i)
            await bus.publish(topic, event)  # returns only once acknowledged by the ISR
            acknowledged.append(str(event.event_id))
        new_leader = await asyncio.to_thread(_leader, kafka_cluster.bootstrap_servers, topic)
        assert new_leader != leader
        await eventually(lambda: set(acknowledged) <= consumed, timeout=120)
    finally:
        await bus.stop()
