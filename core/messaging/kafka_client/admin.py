"""`KafkaAdmin`: topic creation and inspection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from core.config import KafkaConfig
from core.messaging.errors import (
    TopicSetupError,
)
from core.messaging.kafka_client import _clients
from core.messaging.kafka_client._common import (
    _base,
)


class KafkaAdmin:
    """Topic management; every call is idempotent where Kafka allows it."""

    def __init__(self, config: KafkaConfig) -> None:
        self._admin = _clients.admin(_base(config))
        self._config = config

    async def create_topics(
        self,
        topics: Iterable[str],
        partitions: int | None = None,
        replication_factor: int | None = None,
        configs: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Create the topics that do not exist yet; existing ones are left as they are.

        Partitions and replication default to the config's. Raises `TopicSetupError`, naming
        the topic and the reason, when one cannot be created within `timeout` seconds (the
        broker away, not authorized, a replication factor above the broker count)."""
        new = [
            NewTopic(
                t,
                num_partitions=partitions or self._config.topic_partitions,
                replication_factor=replication_factor or self._config.topic_replication_factor,
                config=dict(configs or {}),
            )
            for t in topics
        ]
        if not new:
            return
        futures = await asyncio.to_thread(
            self._admin.create_topics, new, operation_timeout=timeout, request_timeout=timeout
        )
        for topic, fut in futures.items():
            try:
                await asyncio.wait_for(asyncio.wrap_future(fut), timeout + 5)
            except TimeoutError:
                raise TopicSetupError(
                    f"cannot create topic {topic}: no answer from Kafka at "
                    f"{self._config.bootstrap_servers} within {timeout:g}s"
                ) from None
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicSetupError(f"cannot create topic {topic}: {exc}") from exc

    async def add_partitions(self, topic: str, total: int, timeout: float = 30.0) -> None:
        """Grow `topic` to `total` partitions (Kafka never shrinks one)."""
        futures = await asyncio.to_thread(
            self._admin.create_partitions, [NewPartitions(topic, total)],
            operation_timeout=timeout, request_timeout=timeout)
        for fut in futures.values():
            try:
                await asyncio.wait_for(asyncio.wrap_future(fut), timeout + 5)
            except KafkaException as exc:
                raise TopicSetupError(f"cannot grow topic {topic}: {exc}") from exc

    async def topics(self) -> dict[str, int]:
        """Topic name to partition count."""
        meta = await asyncio.to_thread(self._admin.list_topics, timeout=10)
        return {name: len(t.partitions) for name, t in meta.topics.items()}

    async def end_offsets(self, partitions: Mapping[str, int],
                          timeout: float = 10.0) -> dict[tuple[str, int], int]:
        """The end (next offset) of every partition of `partitions` (topic -> count), in one
        batched request rather than one per partition."""
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        wanted = {TopicPartition(t, p): latest
                  for t, count in partitions.items() for p in range(count)}
        if not wanted:
            return {}
        futures = await asyncio.to_thread(self._admin.list_offsets, wanted,
                                          request_timeout=timeout)
        ends: dict[tuple[str, int], int] = {}
        for tp, fut in futures.items():
            ends[(tp.topic, tp.partition)] = (await asyncio.wrap_future(fut)).offset
        return ends

    async def group_offsets(self, timeout: float = 10.0) -> dict[str, dict[tuple[str, int], int]]:
        """Every consumer group's committed next offset per (topic, partition), for
        operators' views of lag (`GroupInspector` reads one group from inside a process)."""
        listed = await asyncio.to_thread(self._admin.list_consumer_groups,
                                         request_timeout=timeout)
        groups = sorted(g.group_id for g in (await asyncio.wrap_future(listed)).valid)

        async def committed(group: str) -> dict[tuple[str, int], int]:
            futures = self._admin.list_consumer_group_offsets(  # returns at once: futures
                [ConsumerGroupTopicPartitions(group)], request_timeout=timeout)
            result = await asyncio.wrap_future(futures[group])
            return {(tp.topic, tp.partition): tp.offset
                    for tp in result.topic_partitions or [] if tp.offset >= 0}

        # the client takes one group per request: all asked at once
        found = await asyncio.gather(*(committed(g) for g in groups))
        return dict(zip(groups, found, strict=True))

    async def delete_topics(self, topics: Iterable[str]) -> None:
        futures = await asyncio.to_thread(self._admin.delete_topics, list(topics))
        for fut in futures.values():
            try:
                await asyncio.wrap_future(fut)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
