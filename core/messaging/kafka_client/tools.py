"""One-shot helpers for tools and tests: read a topic, a group's offsets and lag, its members."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from core.config import KafkaConfig
from core.messaging.kafka_client import _clients
from core.messaging.kafka_client._common import (
    _base,
    _record,
)
from core.messaging.types import Record

log = logging.getLogger(__name__)


async def read_topic(config: KafkaConfig, topic: str, timeout: float = 10.0) -> list[Record]:
    """Every record currently in `topic`, oldest first per partition, without joining a group
    or committing anything: for tools that inspect a topic (dead letters, say)."""
    return await asyncio.to_thread(_read_topic, config, topic, timeout)


def _read_topic(config: KafkaConfig, topic: str, timeout: float) -> list[Record]:
    consumer = _clients.consumer(
        {**_base(config), "group.id": f"{config.client_id}-reader", "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        ends: dict[int, int] = {}
        assignment = []
        for partition in meta.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            if high > low:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        consumer.assign(assignment)
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is not None:
                    continue
                record = _record(msg)
                records.append(record)
                if record.offset + 1 >= ends.get(record.partition, 0):
                    ends.pop(record.partition, None)
        return records
    finally:
        consumer.close()


async def committed_offsets(config: KafkaConfig, group: str, topic: str) -> dict[int, int]:
    """The group's committed next-offset per partition of `topic` (partitions without one
    are left out)."""
    return await asyncio.to_thread(_committed_offsets, config, group, topic)


def _committed_offsets(config: KafkaConfig, group: str, topic: str) -> dict[int, int]:
    consumer = _group_consumer(config, group)
    try:
        parts = _partitions(consumer, topic)
        return {
            tp.partition: tp.offset
            for tp in consumer.committed(parts, timeout=10)
            if tp.offset >= 0
        } if parts else {}
    finally:
        consumer.close()


def _group_consumer(config: KafkaConfig, group: str) -> Consumer:
    """A consumer of `group` that never joins it: for reading and committing its offsets."""
    return _clients.consumer({**_base(config), "group.id": group, "enable.auto.commit": False})


def _partitions(consumer: Consumer, topic: str) -> list[TopicPartition]:
    """Every partition of `topic`; none if it does not exist."""
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:
        return []
    return [TopicPartition(topic, p) for p in meta.partitions]


async def commit_offsets(
    config: KafkaConfig, group: str, topic: str, offsets: Mapping[int, int]
) -> None:
    """Commit next-offsets per partition for `group` without joining it (tools only)."""
    await asyncio.to_thread(_commit_offsets, config, group, topic, dict(offsets))


def _commit_offsets(config: KafkaConfig, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = _group_consumer(config, group)
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


async def group_lag(config: KafkaConfig, group: str, topic: str) -> dict[int, int]:
    """Records per partition of `topic` that `group` has not committed yet (a partition the
    group never committed counts from its low watermark)."""
    return await asyncio.to_thread(_group_lag, config, group, topic)


def _group_lag(config: KafkaConfig, group: str, topic: str) -> dict[int, int]:
    consumer = _group_consumer(config, group)
    try:
        parts = _partitions(consumer, topic)
        if not parts:
            return {}
        committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
        lag = {}
        for tp in parts:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            done = committed.get(tp.partition, -1)
            lag[tp.partition] = high - (done if done >= 0 else low)
        return lag
    finally:
        consumer.close()


async def group_member_counts(config: KafkaConfig, groups: Iterable[str]) -> dict[str, int]:
    """Active members per consumer group; a group that does not exist (or has no members
    left) counts 0. Groups the broker could not describe are left out: unknown is not
    empty, and callers deciding to delete something must not mistake the one for the other.
    """
    wanted = list(groups)
    if not wanted:
        return {}
    return await asyncio.to_thread(_group_member_counts, config, wanted)


def _group_member_counts(config: KafkaConfig, groups: list[str]) -> dict[str, int]:
    admin = _clients.admin(_base(config))
    counts: dict[str, int] = {}
    for group, fut in admin.describe_consumer_groups(groups, request_timeout=10).items():
        try:
            counts[group] = len(fut.result().members)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
                counts[group] = 0
            else:
                log.warning("cannot describe consumer group %s: %s", group, exc)
    return counts
