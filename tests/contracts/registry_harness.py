"""One adapter per registry backend that supports writes, so the contract reads the same for
the in-memory registry and the Kafka one.

Each harness makes registries that share one log (a `MemoryHub`, or a fresh Kafka topic):
separate registries stand for separate processes. It can also write raw records to that log
and read it back, for the cases about malformed records and tombstones.
"""

from __future__ import annotations

import abc
import dataclasses

from core.config import KafkaConfig
from core.messaging.kafka_client import KafkaAdmin, KafkaProducer, read_topic
from core.service_registry.following import LogRegistry
from core.service_registry.kafka import TOPIC_CONFIGS, KafkaLog
from core.service_registry.memory import MemoryHub, MemoryLog
from tests.helpers import unique


@dataclasses.dataclass(frozen=True)
class Timing:
    ttl: float = 2.0
    heartbeat_interval: float = 0.4
    grace: float = 30.0


class RegistryHarness(abc.ABC):
    name: str

    def __init__(self) -> None:
        self.made: list[LogRegistry] = []

    async def registry(self, timing: Timing = Timing()) -> LogRegistry:
        """A started registry on the shared log."""
        made = LogRegistry(self._log(timing), ttl=timing.ttl,
                           heartbeat_interval=timing.heartbeat_interval, grace=timing.grace,
                           catch_up_timeout=20.0)
        self.made.append(made)
        await made.start()
        return made

    @abc.abstractmethod
    def _log(self, timing: Timing) -> KafkaLog | MemoryLog: ...

    @abc.abstractmethod
    async def write_raw(self, key: bytes | None, value: bytes | None) -> None: ...

    @abc.abstractmethod
    async def records(self) -> list[tuple[bytes | None, bytes | None]]:
        """Every (key, value) in the log, oldest first."""

    async def close(self) -> None:
        for registry in self.made:
            await registry.stop()


class MemoryHarness(RegistryHarness):
    name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.hub = MemoryHub()

    def _log(self, timing: Timing) -> MemoryLog:
        return MemoryLog(self.hub)

    async def write_raw(self, key: bytes | None, value: bytes | None) -> None:
        from core.service_registry.log import LogRecord
        self.hub.records.append(LogRecord(key, value, None))

    async def records(self) -> list[tuple[bytes | None, bytes | None]]:
        return [(r.key, r.value) for r in self.hub.records]


class KafkaHarness(RegistryHarness):
    name = "kafka"

    def __init__(self, bootstrap_servers: str) -> None:
        super().__init__()
        self.config = KafkaConfig(bootstrap_servers, unique("registry"), unique("group"),
                                  topic_partitions=2)
        self.topic = unique("registry")

    async def create_topic(self) -> None:
        await KafkaAdmin(self.config).create_topics([self.topic], configs=TOPIC_CONFIGS)

    def _log(self, timing: Timing) -> KafkaLog:
        config = dataclasses.replace(self.config, client_id=unique("registry"))
        return KafkaLog(config, self.topic, write_timeout=timing.ttl)

    async def write_raw(self, key: bytes | None, value: bytes | None) -> None:
        producer = KafkaProducer(self.config)
        await producer.start()
        try:
            await producer.produce(self.topic, value, key)
        finally:
            await producer.stop()

    async def records(self) -> list[tuple[bytes | None, bytes | None]]:
        return [(r.key, r.value) for r in await read_topic(self.config, self.topic)]
