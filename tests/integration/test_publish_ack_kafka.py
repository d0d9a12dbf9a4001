"""`publish` returns only after the broker's acknowledgement, against a real broker.

The contract suite (`tests/contracts`, `test_publish_returns_where_the_record_is_stored`)
checks that the returned `DeliveryReport` names a record a fresh reader finds. Here the
broker goes away: a publish that returned before the acknowledgement would return at once,
so the test holds it to still be pending, then brings the broker back and sees it land.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.config import KafkaConfig
from core.messaging.kafka_client import read_topic
from tests.helpers import order_registry, placed
from tests.integration.conftest import BusFactory

pytestmark = pytest.mark.kafka


async def test_publish_waits_for_the_broker_and_lands_once_it_is_back(
    kafka: Any, make_bus: BusFactory, topic: str, kafka_config: KafkaConfig
) -> None:
    bus = make_bus(order_registry())
    await bus.start()
    await bus.publish(topic, placed("o-warm"))  # connected, the topic's leaders known
    await asyncio.to_thread(kafka.stop)
    event = placed("o-away")
    publishing = asyncio.create_task(bus.publish(topic, event))
    try:
        await asyncio.sleep(2.0)
        assert not publishing.done(), f"publish returned with the broker away: {publishing}"
    finally:
        await asyncio.to_thread(kafka.restart)
    report = await asyncio.wait_for(publishing, 60)
    stored = {(r.partition, r.offset): r for r in await read_topic(kafka_config, topic)}
    assert stored[(report.partition, report.offset)].header("event_id") == str(event.event_id)
