"""Kafka helpers for the process tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from core.config import KafkaConfig
from core.messaging import KafkaAdmin


async def start_at_the_end(config: KafkaConfig, group: str, topics: Iterable[str]) -> None:
    """Create `topics` and commit `group`'s offsets at their ends, so a consumer of a new
    group starts with what is published from now on, not with every event that earlier
    tests of the session left on these shared topics."""
    names = list(topics)
    await KafkaAdmin(config).create_topics(names)
    await asyncio.to_thread(_commit_ends, config, group, names)


def _commit_ends(config: KafkaConfig, group: str, topics: list[str]) -> None:
    consumer = Consumer({"bootstrap.servers": config.bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False})
    try:
        ends = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            for partition in meta.partitions:
                tp = TopicPartition(topic, partition)
                ends.append(TopicPartition(topic, partition, _high(consumer, tp)))
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def _high(consumer: Consumer, tp: TopicPartition, timeout: float = 20.0) -> int:
    """The partition's end; a topic created a moment ago may have no leader yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=5)[1])
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
