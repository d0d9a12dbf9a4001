"""The Kafka backend (the default): the compacted topic `platform.registry`.

One record per instance, keyed by its id (`records.py`); the topic is created on start when
missing, compacted, and stamped with the broker's append time (`message.timestamp.type =
LogAppendTime`), so replayed records are aged by one clock, the broker's, not by each writer's.
Every instance follows the whole topic (`TopicFollower`: assigned partitions, no group);
the rules live in `LogRegistry` and `InstanceTable`.

Kafka away at start: `start` fails with a `RegistryError` naming the bootstrap servers after
`start_timeout`, rather than running on without a registry: a service nobody can discover, that
cannot discover anyone, is better restarted by its supervisor than left half-alive, and
`create_service` already refuses to start without Kafka for its topics. Kafka away later:
heartbeats fail, are logged once and retried; reads are retried; the instances known stay
discoverable (aging stops while the topic is out of reach); readiness says so.
"""

from __future__ import annotations

from core.config import KafkaConfig
from core.messaging.errors import MessagingError
from core.messaging.kafka_client import KafkaAdmin, KafkaProducer, TopicFollower
from core.service_registry.base import RegistryError
from core.service_registry.following import LogRegistry
from core.service_registry.log import LogRecord
from core.service_registry.trust import RecordTrust

REGISTRY_TOPIC = "platform.registry"
TOPIC_CONFIGS = {
    "cleanup.policy": "compact",
    "message.timestamp.type": "LogAppendTime",
    # Compaction never touches the active segment: roll it hourly, so crashed instances'
    # records and their tombstones do not wait a week (the default) to be cleaned.
    "segment.ms": "3600000",
}


class KafkaLog:
    """`RegistryLog` over one compacted topic: a producer for this instance's records and a
    follower reading every record of every instance."""

    def __init__(self, config: KafkaConfig, topic: str = REGISTRY_TOPIC, *,
                 write_timeout: float = 10.0) -> None:
        self.config = config
        self.topic = topic
        # A heartbeat is worth nothing once older than the TTL: librdkafka stops retrying it
        # then, instead of holding it for the default two minutes while the broker is away.
        self._producer = KafkaProducer(
            config, **{"message.timeout.ms": max(1000, int(write_timeout * 1000))})
        self._follower = TopicFollower(config, topic)
        self._opened = False

    @property
    def caught_up(self) -> bool:
        return self._follower.caught_up

    async def open(self, timeout: float) -> None:
        try:
            await KafkaAdmin(self.config).create_topics(
                [self.topic], configs=TOPIC_CONFIGS, timeout=timeout)
            await self._follower.start(timeout)
        except MessagingError as exc:
            await self._follower.close()
            raise RegistryError(
                f"the service registry cannot open topic {self.topic} on Kafka at "
                f"{self.config.bootstrap_servers}: {exc}") from exc
        await self._producer.start()
        self._opened = True

    async def read(self) -> list[LogRecord]:
        return [LogRecord(r.key, r.value, r.timestamp_ms)
                for r in await self._follower.poll(timeout=0.2)]

    async def write(self, key: str, value: bytes | None) -> None:
        try:
            await self._producer.produce(self.topic, value, key)
        except MessagingError as exc:
            raise RegistryError(str(exc)) from exc

    async def ping(self) -> None:
        if not await self._producer.topic_exists(self.topic, timeout=2.0):
            raise RegistryError(f"topic {self.topic} is gone")

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self._producer.stop(timeout=5.0)
        await self._follower.close()


def kafka_registry(
    config: KafkaConfig,
    *,
    ttl: float,
    heartbeat_interval: float,
    grace: float,
    topic: str = REGISTRY_TOPIC,
    start_timeout: float = 30.0,
    catch_up_timeout: float = 10.0,
    trust: RecordTrust | None = None,
) -> LogRegistry:
    """The Kafka-backed registry: writes time out with the TTL, reads the whole topic;
    records signed and checked by `trust` when given."""
    return LogRegistry(KafkaLog(config, topic, write_timeout=ttl), ttl=ttl,
                       heartbeat_interval=heartbeat_interval, grace=grace,
                       start_timeout=start_timeout, catch_up_timeout=catch_up_timeout,
                       trust=trust)
