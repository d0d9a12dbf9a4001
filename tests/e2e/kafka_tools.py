"""Reading and re-producing records with the plain Kafka client, outside every service: what an
operator (or a broker redelivering) would do."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from core.messaging.kafka_client import _clients
from tests.helpers import eventually


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.value)
        return body


def about(event_type: str, **data: str) -> Callable[[Record], bool]:
    """Matches records of `event_type` whose `data` has these values."""
    def match(record: Record) -> bool:
        try:
            envelope = record.envelope
        except ValueError:
            return False
        fields = envelope.get("data") or {}
        return envelope.get("event_type") == event_type and all(
            str(fields.get(k)) == v for k, v in data.items())
    return match


def _read(bootstrap: str, topic: str, match: Callable[[Record], bool]) -> list[Record]:
    """Every record of `topic` up to its current end that `match`es (no group, no commit)."""
    # librdkafka's consumer, or the in-memory broker's for a `memory://` address (the
    # monolith on BUS=memory, run in this process: tests/e2e_monolith/memory)
    consumer = _clients.consumer({"bootstrap.servers": bootstrap,
                                  "group.id": f"e2e-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            return []
        ends = {}
        for p in meta.topics[topic].partitions:
            low, high = _watermarks(consumer, TopicPartition(topic, p))
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        found: list[Record] = []
        while ends:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            record = Record(topic, msg.partition(), msg.offset(), msg.key(), msg.value(),
                            list(msg.headers() or []))
            if match(record):
                found.append(record)
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
        return found
    finally:
        consumer.close()


_NOT_YET = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                      KafkaError.UNKNOWN_TOPIC_OR_PART})


def _watermarks(consumer: Any, tp: TopicPartition) -> tuple[int, int]:
    """A partition's low and high offsets. A topic just created (a reply topic the first
    reply made) has its partitions' leaders elected a moment after it is listed, and asked
    then the broker answers NOT_LEADER_FOR_PARTITION: asked again, for up to 10 s."""
    deadline = time.monotonic() + 10
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() not in _NOT_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def records(bootstrap: str, topic: str, match: Callable[[Record], bool]) -> list[Record]:
    return await asyncio.to_thread(_read, bootstrap, topic, match)


def _produce(bootstrap: str, record: Record) -> tuple[int, int]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    delivered: list[Any] = []
    producer.produce(record.topic, record.value, key=record.key, headers=record.headers,
                     partition=record.partition,
                     on_delivery=lambda err, msg: delivered.append(err or msg))
    assert producer.flush(30) == 0, "the copy was not acknowledged"
    result = delivered[0]
    assert not isinstance(result, Exception) and hasattr(result, "offset"), result
    return int(result.partition()), int(result.offset())


async def produce_again(bootstrap: str, record: Record) -> tuple[int, int]:
    """The same key, value and headers again, to the same partition: a redelivery."""
    return await asyncio.to_thread(_produce, bootstrap, record)


def _committed(bootstrap: str, group_prefix: str, topic: str,
               partition: int) -> dict[str, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_consumer_groups(request_timeout=10).result()
    # Groups with members only: a group an instance left behind (the user service's
    # per-instance cache group of an instance that was killed and restarted) commits nothing.
    groups = [g.group_id for g in listed.valid if g.group_id.startswith(group_prefix)
              and g.state not in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD)]
    offsets: dict[str, int] = {}
    for group in groups:
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, partition)])]
        result = admin.list_consumer_group_offsets(request)[group].result()
        for tp in result.topic_partitions:
            if tp.offset >= 0:
                offsets[group] = tp.offset
    return offsets


async def committed(bootstrap: str, group_prefix: str, topic: str,
                    partition: int) -> dict[str, int]:
    """Each group named `group_prefix...` that has committed on `topic`/`partition`, and its
    committed offset (the next record it will read): past a record means it handled it."""
    return await asyncio.to_thread(_committed, bootstrap, group_prefix, topic, partition)


async def handled(bootstrap: str, group_prefix: str, topic: str, partition: int, offset: int,
                  timeout: float = 45.0) -> dict[str, int]:
    """Wait until at least one group named `group_prefix...` with members has committed on that
    partition and every such group has committed past `offset`; return their offsets."""
    async def past() -> dict[str, int] | None:
        groups = await committed(bootstrap, group_prefix, topic, partition)
        return groups if groups and all(o > offset for o in groups.values()) else None

    found: dict[str, int] = await eventually(past, timeout=timeout, interval=0.5)
    return found
