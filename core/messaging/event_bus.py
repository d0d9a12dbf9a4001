"""`EventBus`: publish events and subscribe handlers, with a Kafka and an in-memory adapter.

Services depend on the `EventBus` protocol; `create_service` hands them the Kafka bus, unit
tests hand them `InMemoryEventBus`, which runs the same dispatcher (idempotency, retries,
dead letters) synchronously inside `publish`, so handler logic is tested as it runs live.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from core.config import KafkaConfig
from core.messaging.consumer import EventConsumer, Handler
from core.messaging.dispatch import DEFAULT_RETRY, Outcome, RecordDispatcher
from core.messaging.dlq import InMemoryDeadLetterSink
from core.messaging.events import BaseEvent, correlated
from core.messaging.handlers import HandlerMiddleware, HandlerRegistry
from core.messaging.idempotency import IdempotencyStore, InMemoryIdempotencyStore
from core.messaging.kafka_client import DeliveryReport, KafkaProducer
from core.messaging.serialization import EventRegistry, EventSerializer
from core.messaging.types import Headers, Record
from core.resilience.retry import RetryPolicy
from core.runtime import Runtime


class EventBus(Protocol):
    """Publishes events to topics and runs subscribed handlers.

    `publish` returns once the event is durable (acknowledged by all in-sync replicas on
    Kafka), with where it was stored. Events with the same partition key are delivered to
    handlers in publish order. Delivery is at-least-once; handlers run through an idempotency
    store, so effects happen once per (event, handler). An event that does not name its
    origin (`service_name`) is published with the bus's service name, one that names no
    correlation or causation id with the current ones (`core.correlation`).
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(
        self, topic: str, event: BaseEvent[Any], *, key: str | None = None,
        headers: Headers | None = None,
    ) -> DeliveryReport: ...

    async def publish_many(self, topic: str, events: Sequence[BaseEvent[Any]]) -> None: ...

    def subscribe(
        self, topics: Iterable[str] | str, handler: Handler, *, group_id: str | None = None
    ) -> Any: ...


class KafkaEventBus:
    """The production bus: one shared idempotent producer, one `EventConsumer` per group.

    `start()` creates what its consumers need before they join their groups: each subscribed
    topic's `<topic>.dlq` and (unless `create_topics=False`) the subscribed topics, with the
    config's partitions and replication. Topics it only publishes to are not created: make
    them with `KafkaAdmin.create_topics` (a record for a missing topic fails to publish).
    `consumer_options` go to each `EventConsumer` (`middleware=[...]`, `max_in_flight`, ...).
    """

    def __init__(
        self,
        config: KafkaConfig,
        events: EventRegistry | None = None,
        *,
        idempotency: IdempotencyStore | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        producer: KafkaProducer | None = None,
        runtime: Runtime | None = None,
        **consumer_options: Any,
    ) -> None:
        self.config = config
        self.events = events or EventRegistry()
        self.serializer = EventSerializer(self.events, service_name=config.service_name)
        self.producer = producer or KafkaProducer(config)
        self._idempotency = idempotency or InMemoryIdempotencyStore()
        self._retry = retry
        self._consumer_options = consumer_options
        self.runtime = runtime if runtime is not None else Runtime()
        """Handed to every consumer's handlers as `ctx.runtime`."""
        self.consumers: dict[str, EventConsumer] = {}

    async def start(self) -> None:
        await self.producer.start()
        for consumer in self.consumers.values():
            await consumer.start()

    async def stop(self) -> None:
        for consumer in self.consumers.values():
            await consumer.stop()
        await self.producer.stop()

    async def publish(
        self, topic: str, event: BaseEvent[Any], *, key: str | None = None,
        headers: Headers | None = None,
    ) -> DeliveryReport:
        event = correlated(event)
        value, event_headers = self.serializer.serialize(event)
        if headers:
            event_headers.extend(headers)
        return await self.producer.produce(
            topic, value, key if key is not None else event.partition_key(), event_headers
        )

    async def publish_many(self, topic: str, events: Sequence[BaseEvent[Any]]) -> None:
        """Publish a batch, pipelined: all are queued, then all acknowledgements awaited.
        Per-key order holds as with single publishes."""
        serialize = self.serializer.serialize
        records = []
        for event in events:
            event = correlated(event)
            value, headers = serialize(event)
            records.append((value, event.partition_key(), headers))
        await self.producer.produce_batch(topic, records)

    def subscribe(
        self, topics: Iterable[str] | str, handler: Handler, *, group_id: str | None = None
    ) -> EventConsumer:
        group = group_id or self.config.consumer_group
        consumer = self.consumers.get(group)
        if consumer is None:
            consumer = EventConsumer(
                self.config, self.producer, group_id=group, events=self.events,
                idempotency=self._idempotency, retry=self._retry, runtime=self.runtime,
                **self._consumer_options,
            )
            self.consumers[group] = consumer
        consumer.subscribe(topics, handler)
        return consumer


IMMEDIATE_RETRY = RetryPolicy(max_attempts=3, initial_delay=0, jitter=False)


class InMemoryEventBus:
    """A bus in one process for unit tests of handlers: `publish` serializes the event, runs
    every subscribed group's handlers before returning, and keeps what was published and
    dead-lettered for assertions. Never the evidence that Kafka works."""

    def __init__(
        self,
        events: EventRegistry | None = None,
        *,
        idempotency: IdempotencyStore | None = None,
        retry: RetryPolicy = IMMEDIATE_RETRY,
        service_name: str = "",
        runtime: Runtime | None = None,
        middleware: Sequence[HandlerMiddleware] = (),
    ) -> None:
        self.events = events or EventRegistry()
        self.runtime = runtime if runtime is not None else Runtime()
        """Handed to handlers as `ctx.runtime`: fill it with the parts they use."""
        self.serializer = EventSerializer(self.events, service_name=service_name)
        self._idempotency = idempotency or InMemoryIdempotencyStore()
        self._retry = retry
        self._middleware = tuple(middleware)
        self.dead_letters = InMemoryDeadLetterSink()
        self.published: dict[str, list[Record]] = defaultdict(list)
        self.processed: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        """Outcomes of every delivery, counted like `EventConsumer.processed`."""
        self._routes: dict[str, list[RecordDispatcher]] = defaultdict(list)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(
        self, topic: str, event: BaseEvent[Any], *, key: str | None = None,
        headers: Headers | None = None,
    ) -> DeliveryReport:
        event = correlated(event)
        value, event_headers = self.serializer.serialize(event)
        partition_key = key if key is not None else event.partition_key()
        record = Record(
            topic=topic, partition=0, offset=len(self.published[topic]),
            key=partition_key.encode() if partition_key is not None else None,
            value=value, headers=event_headers + list(headers or []),
        )
        await self.deliver(record)
        return DeliveryReport(topic, 0, record.offset)

    async def deliver(self, record: Record) -> list[Outcome]:
        """Hand a raw record to every subscriber of its topic (also for poison-record tests)."""
        self.published[record.topic].append(record)
        outcomes = [await d.process(record) for d in self._routes.get(record.topic, [])]
        for outcome in outcomes:
            self.processed[outcome] += 1
        return outcomes

    async def publish_many(self, topic: str, events: Sequence[BaseEvent[Any]]) -> None:
        for event in events:
            await self.publish(topic, event)

    def subscribe(
        self, topics: Iterable[str] | str, handler: Handler, *, group_id: str | None = None
    ) -> None:
        if isinstance(handler, HandlerRegistry):
            registry = handler
            for cls in registry.events:
                self.events.register(cls)
        else:
            registry = HandlerRegistry.for_all(self.events, handler)
        dispatcher = RecordDispatcher(registry, self._idempotency, self.dead_letters,
                                      retry=self._retry, consumer_group=group_id or "memory",
                                      runtime=self.runtime,
                                      middleware=self._middleware)
        for topic in [topics] if isinstance(topics, str) else topics:
            self._routes[topic].append(dispatcher)
