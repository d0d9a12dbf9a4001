"""What the stand-ins share: metadata shaped as confluent-kafka's, completed futures, errors.

The stand-ins (`MemoryProducer`, `MemoryConsumer`, `MemoryAdmin`) offer the part of
confluent-kafka's API that `core.messaging.kafka_client` calls, with its shapes (methods
returning `TopicPartition` lists, admin calls returning futures, errors as
`KafkaException(KafkaError)`), so the wrappers (their threads, callbacks, futures and shutdown)
run unchanged over either. Callbacks run on the calling thread, as librdkafka's run on the
thread that polls: delivery reports inside `produce`, rebalance callbacks inside a consumer's
`poll`, `consume` or `close`.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from core.messaging.memory_broker.broker import Broker


@dataclass(frozen=True)
class PartitionMetadata:
    id: int


@dataclass(frozen=True)
class TopicMetadata:
    topic: str
    partitions: dict[int, PartitionMetadata]
    error: KafkaError | None = None


@dataclass(frozen=True)
class ClusterMetadata:
    topics: dict[str, TopicMetadata] = field(default_factory=dict)


def _metadata(broker: Broker, topic: str | None) -> ClusterMetadata:
    counts = broker.partition_counts()
    names = [topic] if topic is not None else list(counts)
    return ClusterMetadata({
        name: TopicMetadata(name, {p: PartitionMetadata(p) for p in range(counts[name])})
        for name in names if name in counts})


def _done(result: Any = None, error: BaseException | None = None) -> Future[Any]:
    future: Future[Any] = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return future


def _error(code: int, reason: str) -> KafkaException:
    return KafkaException(KafkaError(code, reason))


def _key(key: bytes | str | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key
