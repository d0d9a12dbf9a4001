"""`GroupInspector`: a consumer group's committed offsets and partition ends, read from outside
the group."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import Consumer, TopicPartition

from core.config import KafkaConfig
from core.messaging.kafka_client import _clients
from core.messaging.kafka_client._common import TopicPartitionKey, _base

TIMEOUT = 5.0
"""Seconds each question to the broker may take."""


class GroupInspector:
    """Reads one consumer group's progress without joining it.

    Its client is made at the first question and kept until `close()`, and every call runs
    on one thread of its own: a member out of its group asks every few seconds, often while
    the broker is away. It uses a plain consumer, no admin client: in a drill with the
    broker frozen, librdkafka aborted the process (an `eonce` refcount assertion) when admin
    requests that had timed out were answered after the broker came back."""

    def __init__(self, config: KafkaConfig, group: str) -> None:
        self._conf = {**_base(config), "group.id": group, "enable.auto.commit": False}
        self.group = group
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-inspect")
        self._consumer: Consumer | None = None

    async def lag(self, topics: Sequence[str]) -> dict[TopicPartitionKey, tuple[int, int]]:
        """Per partition of `topics`: the group's committed next offset (the low watermark
        for a partition it never committed) and the partition's end. Raises
        `KafkaException` when the broker does not answer."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._lag, list(topics))

    def _lag(self, topics: list[str]) -> dict[TopicPartitionKey, tuple[int, int]]:
        if self._consumer is None:
            self._consumer = _clients.consumer(self._conf)
        consumer = self._consumer
        positions: dict[TopicPartitionKey, tuple[int, int]] = {}
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=TIMEOUT).topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            parts = [TopicPartition(topic, p) for p in meta.partitions]
            for tp in consumer.committed(parts, timeout=TIMEOUT):
                low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT)
                positions[(topic, tp.partition)] = (tp.offset if tp.offset >= 0 else low, high)
        return positions

    async def ends(self, topics: Sequence[str]) -> dict[TopicPartitionKey, int]:
        """The end (high watermark) of every partition of `topics`, without asking the group
        coordinator (a group that never committed may have none ready). Raises
        `KafkaException` when the broker does not answer."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._ends, list(topics))

    def _ends(self, topics: list[str]) -> dict[TopicPartitionKey, int]:
        if self._consumer is None:
            self._consumer = _clients.consumer(self._conf)
        consumer = self._consumer
        ends: dict[TopicPartitionKey, int] = {}
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=TIMEOUT).topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for partition in meta.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                         timeout=TIMEOUT)
                ends[(topic, partition)] = high
        return ends

    async def close(self) -> None:
        """Close the client (on its thread, after any question in progress)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
