"""The one place that picks the client under the wrappers: confluent-kafka's (librdkafka), or
the in-process broker's stand-ins for a `memory://` address (`core.messaging.memory_broker`).

Any other address gets confluent-kafka's class with the very configuration it always had."""

from __future__ import annotations

from typing import Any, cast

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from core.messaging.memory_broker import MemoryAdmin, MemoryConsumer, MemoryProducer, is_memory


def _in_memory(conf: dict[str, Any]) -> bool:
    return is_memory(str(conf.get("bootstrap.servers", "")))


def producer(conf: dict[str, Any]) -> Producer:
    if _in_memory(conf):
        return cast(Producer, MemoryProducer(conf))
    return Producer(conf)


def consumer(conf: dict[str, Any]) -> Consumer:
    if _in_memory(conf):
        return cast(Consumer, MemoryConsumer(conf))
    return Consumer(conf)


def admin(conf: dict[str, Any]) -> AdminClient:
    if _in_memory(conf):
        return cast(AdminClient, MemoryAdmin(conf))
    return AdminClient(conf)
