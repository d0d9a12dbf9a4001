"""What the wrappers share: client configuration, the record conversion, callback types."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    Message,
)

from core.config import KafkaConfig
from core.messaging.types import Record

RDKAFKA_LOG = logging.getLogger("librdkafka")
"""librdkafka's own log lines (`%4|...|GETPID|...`) come here instead of raw to stderr."""

TopicPartitionKey = tuple[str, int]
AssignCallback = Callable[[list[TopicPartitionKey]], None]
RevokeCallback = Callable[[list[TopicPartitionKey]], Mapping[TopicPartitionKey, int]]
"""Called before partitions are taken away; returns the next offsets to commit for them."""
LostCallback = Callable[[list[TopicPartitionKey]], None]
"""Called when partitions were lost (another member may own them already): nothing of theirs
may be committed, and work on them should stop at once."""


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """Where the broker stored an acknowledged record."""

    topic: str
    partition: int
    offset: int


def _base(config: KafkaConfig) -> dict[str, Any]:
    return {
        "bootstrap.servers": config.bootstrap_servers,
        "client.id": config.client_id,
        "logger": RDKAFKA_LOG,
        **config.extra,
    }


def _record(msg: Message) -> Record:
    _, timestamp = msg.timestamp()
    return Record(
        topic=msg.topic(),  # type: ignore[arg-type]  # only error events lack these
        partition=msg.partition(),  # type: ignore[arg-type]
        offset=msg.offset(),  # type: ignore[arg-type]
        key=msg.key(),
        value=msg.value(),
        headers=msg.headers() or [],  # type: ignore[arg-type]  # we always send a list
        timestamp_ms=timestamp,
    )
