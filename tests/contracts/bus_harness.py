"""One adapter object per `EventBus` implementation, so the contract reads the same for both.

A harness hides what differs between a fake and the real bus but must not be part of the
contract: how the bus is built and started, where dead letters end up (a list in memory,
`<topic>.dlq` on Kafka), how a test waits for work to finish. What the bus does with an
event is left to the bus. Where an implementation cannot honour a case, its harness says so
in a `Capability` with the reason, and the contract asserts the documented alternative.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.config import KafkaConfig
from core.messaging import dlq
from core.messaging.dispatch import Outcome
from core.messaging.event_bus import EventBus, InMemoryEventBus, KafkaEventBus
from core.messaging.events import BaseEvent
from core.messaging.handlers import HandlerMiddleware
from core.messaging.kafka_client import DeliveryReport, KafkaAdmin, read_topic
from core.messaging.serialization import EventRegistry
from core.messaging.types import Headers, Record
from core.resilience.retry import RetryPolicy
from tests.helpers import eventually, order_registry, unique

FAST = RetryPolicy(max_attempts=3, initial_delay=0, jitter=False)
SETTLE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Capability:
    """Whether an implementation honours one case of the contract, and if not, why."""

    supported: bool
    reason: str


class BusHarness(abc.ABC):
    """Builds, feeds and inspects one bus on a fresh topic."""

    name: str
    drain: Capability
    """stop() waits for handlers that are running when it is called."""

    def __init__(self) -> None:
        self.topic = unique("contract")
        self.group = unique("group")
        self._bus: EventBus | None = None

    @property
    def bus(self) -> EventBus:
        assert self._bus is not None, "open() the harness first"
        return self._bus

    @abc.abstractmethod
    def _build(self, events: EventRegistry, retry: RetryPolicy,
               middleware: Sequence[HandlerMiddleware]) -> EventBus: ...

    async def open(self, handler: Any, *, retry: RetryPolicy = FAST,
                   events: EventRegistry | None = None,
                   middleware: Sequence[HandlerMiddleware] = ()) -> EventBus:
        """A started bus with `handler` subscribed to the topic, ready to receive."""
        bus = self._bus = self._build(events or order_registry(), retry, middleware)
        bus.subscribe(self.topic, handler, group_id=self.group)
        await bus.start()
        await self._ready()
        return bus

    async def _ready(self) -> None:
        return None

    async def publish(self, event: BaseEvent[Any], *, key: str | None = None,
                      headers: Headers | None = None) -> DeliveryReport:
        return await self.bus.publish(self.topic, event, key=key, headers=headers)

    async def publish_many(self, events: list[BaseEvent[Any]]) -> None:
        await self.bus.publish_many(self.topic, events)

    async def stop(self) -> None:
        await self.bus.stop()

    @abc.abstractmethod
    async def publish_raw(self, value: bytes, key: bytes) -> None:
        """Put bytes on the topic that no serializer wrote (a poison record)."""

    @abc.abstractmethod
    async def stored(self) -> list[Record]:
        """Every record the topic holds now, as a fresh reader sees it."""

    @abc.abstractmethod
    async def dead_letters(self) -> list[dlq.DeadLetter]:
        """The topic's dead letters, as an operator sees them."""

    @abc.abstractmethod
    def outcomes(self) -> dict[Outcome, int]:
        """How many deliveries ended how."""

    @abc.abstractmethod
    async def settle(self, check: Callable[[], Any | Awaitable[Any]]) -> Any:
        """Until `check()` is true (fails the test if it never becomes so); returns its value."""

    async def close(self) -> None:
        if self._bus is not None:
            await self._bus.stop()


class MemoryHarness(BusHarness):
    name = "memory"
    drain = Capability(
        False,
        "handlers run inside publish(), so the publisher awaits them: nothing is ever in "
        "flight behind the caller's back for stop() to drain; stop() returns at once and "
        "leaves a running publish alone")

    def _build(self, events: EventRegistry, retry: RetryPolicy,
               middleware: Sequence[HandlerMiddleware]) -> InMemoryEventBus:
        return InMemoryEventBus(events, retry=retry, service_name="contract",
                                middleware=middleware)

    @property
    def memory(self) -> InMemoryEventBus:
        assert isinstance(self.bus, InMemoryEventBus)
        return self.bus

    async def publish_raw(self, value: bytes, key: bytes) -> None:
        offset = len(self.memory.published[self.topic])
        await self.memory.deliver(Record(self.topic, 0, offset, key, value, []))

    async def stored(self) -> list[Record]:
        return list(self.memory.published[self.topic])

    async def dead_letters(self) -> list[dlq.DeadLetter]:
        return [dlq.DeadLetter(dataclasses.replace(record, headers=headers), False)
                for record, headers in self.memory.dead_letters.records]

    def outcomes(self) -> dict[Outcome, int]:
        return dict(self.memory.processed)

    async def settle(self, check: Callable[[], Any | Awaitable[Any]]) -> Any:
        # No waiting: publish() runs the handlers before it returns, so whatever a test waits
        # for has happened already. A fake that needed time would fail here.
        return await eventually(check, timeout=0)


class KafkaHarness(BusHarness):
    name = "kafka"
    drain = Capability(True, "stop() lets in-flight handlers finish within drain_timeout")

    def __init__(self, bootstrap_servers: str) -> None:
        super().__init__()
        self.config = KafkaConfig(bootstrap_servers, unique("contract"), self.group,
                                  service_name="contract")

    async def create_topic(self) -> None:
        await KafkaAdmin(self.config).create_topics([self.topic], partitions=3)

    def _build(self, events: EventRegistry, retry: RetryPolicy,
               middleware: Sequence[HandlerMiddleware]) -> KafkaEventBus:
        return KafkaEventBus(self.config, events, retry=retry, middleware=middleware)

    @property
    def kafka(self) -> KafkaEventBus:
        assert isinstance(self.bus, KafkaEventBus)
        return self.bus

    async def _ready(self) -> None:
        await self.kafka.consumers[self.group].wait_assigned()

    async def publish_raw(self, value: bytes, key: bytes) -> None:
        await self.kafka.producer.produce(self.topic, value, key)

    async def stored(self) -> list[Record]:
        return await read_topic(self.config, self.topic)

    async def dead_letters(self) -> list[dlq.DeadLetter]:
        return await dlq.list_dead_letters(self.config, self.topic)

    def outcomes(self) -> dict[Outcome, int]:
        return dict(self.kafka.consumers[self.group].processed)

    async def settle(self, check: Callable[[], Any | Awaitable[Any]]) -> Any:
        return await eventually(check, timeout=SETTLE_TIMEOUT, interval=0.1)


HARNESSES: dict[str, type[BusHarness]] = {"memory": MemoryHarness, "kafka": KafkaHarness}
