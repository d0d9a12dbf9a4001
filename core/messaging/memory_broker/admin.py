"""`MemoryAdmin`: confluent-kafka's `AdminClient`, over the in-process broker."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from core.messaging.memory_broker._common import ClusterMetadata, _done, _error, _metadata
from core.messaging.memory_broker.registry import broker_for


@dataclass(frozen=True)
class _Offset:
    offset: int


@dataclass(frozen=True)
class _GroupListing:
    group_id: str


@dataclass(frozen=True)
class _Groups:
    valid: list[_GroupListing]


@dataclass(frozen=True)
class _GroupOffsets:
    group_id: str
    topic_partitions: list[TopicPartition]


@dataclass(frozen=True)
class _GroupDescription:
    group_id: str
    members: list[str]


class MemoryAdmin:
    """Topic and group administration; every call answers at once (completed futures)."""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self._broker = broker_for(str(conf["bootstrap.servers"]))

    def create_topics(self, new_topics: Iterable[Any], **_: Any) -> dict[str, Future[None]]:
        futures = {}
        for new in new_topics:
            count = int(new.num_partitions)
            if count < 1:
                futures[new.topic] = _done(error=_error(KafkaError.INVALID_PARTITIONS,
                                                        "partitions must be at least 1"))
            elif self._broker.create_topic(new.topic, count, dict(new.config or {})):
                futures[new.topic] = _done()
            else:
                futures[new.topic] = _done(error=_error(KafkaError.TOPIC_ALREADY_EXISTS,
                                                        f"topic {new.topic} already exists"))
        return futures

    def create_partitions(self, new_partitions: Iterable[Any], **_: Any
                          ) -> dict[str, Future[None]]:
        futures = {}
        for new in new_partitions:
            try:
                self._broker.add_partitions(new.topic, int(new.new_total_count))
                futures[new.topic] = _done()
            except (KeyError, ValueError) as exc:
                futures[new.topic] = _done(error=_error(KafkaError.INVALID_PARTITIONS, str(exc)))
        return futures

    def delete_topics(self, topics: Iterable[str], **_: Any) -> dict[str, Future[None]]:
        return {t: _done() if self._broker.delete_topic(t) else _done(
            error=_error(KafkaError.UNKNOWN_TOPIC_OR_PART, f"no topic {t}")) for t in topics}

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata:
        return _metadata(self._broker, topic)

    def list_offsets(self, wanted: Mapping[TopicPartition, Any], **_: Any
                     ) -> dict[TopicPartition, Future[_Offset]]:
        return {tp: _done(_Offset(self._broker.end(tp.topic, tp.partition))) for tp in wanted}

    def list_consumer_groups(self, **_: Any) -> Future[_Groups]:
        return _done(_Groups([_GroupListing(g) for g in self._broker.describe()]))

    def list_consumer_group_offsets(self, requests: Iterable[Any], **_: Any
                                    ) -> dict[str, Future[_GroupOffsets]]:
        futures = {}
        for request in requests:
            with self._broker.lock:
                committed = dict(self._broker.group(request.group_id).committed)
            futures[request.group_id] = _done(_GroupOffsets(request.group_id, [
                TopicPartition(t, p, o) for (t, p), o in sorted(committed.items())]))
        return futures

    def describe_consumer_groups(self, groups: Iterable[str], **_: Any
                                 ) -> dict[str, Future[_GroupDescription]]:
        with self._broker.lock:
            return {g: _done(_GroupDescription(g, sorted(
                self._broker.groups[g].subscriptions) if g in self._broker.groups else []))
                    for g in groups}
