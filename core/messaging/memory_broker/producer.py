"""`MemoryProducer`: confluent-kafka's `Producer`, over the in-process broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError

from core.messaging.memory_broker._common import ClusterMetadata, _key, _metadata
from core.messaging.memory_broker.broker import Headers, Message
from core.messaging.memory_broker.registry import broker_for

DeliveryCallback = Callable[[KafkaError | None, Message], None]


class MemoryProducer:
    """Stores each record at once and reports its delivery inside `produce`."""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self._broker = broker_for(str(conf["bootstrap.servers"]))

    def produce(self, topic: str, value: bytes | None = None, key: bytes | str | None = None,
                partition: int = -1, on_delivery: DeliveryCallback | None = None,
                headers: Headers | None = None, **_: Any) -> None:
        raw_key = _key(key)
        try:
            msg = self._broker.append(topic, raw_key, value, headers, partition)
            err = None
        except KeyError:
            msg = Message(topic, -1, -1, raw_key, value, headers, 0)
            err = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART,
                             f"topic {topic} does not exist (in-memory broker)")
        if on_delivery is not None:
            on_delivery(err, msg)

    def poll(self, timeout: float = 0) -> int:
        if timeout > 0:
            time.sleep(timeout)  # nothing is ever pending: reports went out in produce
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True
              ) -> None:
        return None

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata:
        return _metadata(self._broker, topic)
