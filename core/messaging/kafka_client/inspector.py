"""`GroupInspector`: how many records wait in a group where no member can take them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from core.config import KafkaConfig
from core.messaging.kafka_client._common import _base

TIMEOUT = 5.0
"""Seconds each question to the broker may take."""


class GroupInspector:
    """Asks the broker about one consumer group from outside it: its committed offsets, its
    partitions' ends, and which partitions its live members own.

    Its two clients are made at the first question and kept until `close()`, and every call
    runs on one thread of its own: a member that is out of its group asks every few seconds,
    often while the broker is away, and librdkafka aborted the process (an `eonce` refcount
    assertion) when short-lived admin clients were destroyed with a request to a frozen
    broker outstanding."""

    def __init__(self, config: KafkaConfig, group: str) -> None:
        self._conf = {**_base(config), "group.id": group, "enable.auto.commit": False}
        self.group = group
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-inspect")
        self._consumer: Consumer | None = None
        self._admin: AdminClient | None = None

    async def unowned_lag(self, topics: Sequence[str]) -> int:
        """Records committed by nobody yet on partitions of `topics` that no live member
        owns (a partition never committed counts from its low watermark). Raises
        `KafkaException` when the broker does not answer."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._unowned_lag, list(topics))

    def _unowned_lag(self, topics: list[str]) -> int:
        if self._consumer is None or self._admin is None:
            self._consumer = Consumer(self._conf)
            self._admin = AdminClient({k: v for k, v in self._conf.items()
                                       if k not in ("group.id", "enable.auto.commit")})
        owned = self._owned(self._admin)
        consumer = self._consumer
        waiting = 0
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=TIMEOUT).topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            parts = [TopicPartition(topic, p) for p in meta.partitions
                     if (topic, p) not in owned]
            if not parts:
                continue
            for tp in consumer.committed(parts, timeout=TIMEOUT):
                low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT)
                waiting += max(0, high - (tp.offset if tp.offset >= 0 else low))
        return waiting

    def _owned(self, admin: AdminClient) -> set[tuple[str, int]]:
        future = admin.describe_consumer_groups([self.group], request_timeout=TIMEOUT)[self.group]
        try:
            described = future.result()
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
                return set()
            raise
        return {(tp.topic, tp.partition) for member in described.members
                for tp in member.assignment.topic_partitions}

    async def close(self) -> None:
        """Close the clients (on their thread, after any question in progress)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        self._consumer = self._admin = None
