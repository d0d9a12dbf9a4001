"""Event metrics, each at the seam where its cause is decided.

- Published and publish failures: the producer's delivery reports (`KafkaProducer.on_delivery`,
  on its thread), with the type from the `event_type` header the record was sent with.
  Records to a `.dlq` topic are not "published": the dispatcher counts them as
  dead-lettered. A record purged at shutdown is not a failure (the outbox sends it again).
- Retried, dead-lettered, skipped and inbox claims: `RecordDispatcher.observer`, told by the
  dispatcher, where the policy is decided.
- Consumed and handler duration: `handler_metrics`, a handler middleware outermost in every
  consumer of the service, so it times each handler run the way the dispatcher sees it.

Label children are cached per (topic, type): one dict lookup per record, no `labels()` call.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram

from core.messaging import (
    BaseEvent,
    EventHandler,
    HandlerMiddleware,
    Headers,
    MessageContext,
    Record,
)
from core.messaging.errors import ProducerStoppedError
from core.messaging.kafka_client import _publish_error
from core.metrics.families import Metrics, process_metrics
from core.metrics.tally import Tallies

EVENT_TYPE_HEADER = "event_type"
UNKNOWN = "<unknown>"


def _type_text(event_type: str | bytes | None) -> str:
    if event_type is None:
        return UNKNOWN
    if isinstance(event_type, bytes):
        return event_type.decode("utf-8", "replace")
    return event_type


class EventMetrics:
    """Counts events for one process: a `DispatchObserver`, a `DeliveryObserver` (`delivered`)
    and, through `middleware`, a handler middleware. Thread-safe where it must be: the
    delivery reports come on the producer's thread, the rest on the loop."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = m = metrics or process_metrics()
        self._published = _Children(m.published)
        self._failures = _Children(m.publish_failures)
        self._consumed = _Children(m.consumed)
        self._retried = _Children(m.retried)
        self._dead = _Children(m.dead_lettered)
        self._skipped = _Children(m.skipped)
        self._claims = _Children(m.inbox_claims)
        self._durations: dict[tuple[str, str], Histogram] = {}
        self.tallies: Tallies | None = None
        """The per-record families in plain numbers, when `metrics.tallied`."""
        if m.tallied:
            self.tallies = Tallies()
            m.registry.register(self.tallies)

    # The producer's delivery reports (librdkafka's error and message).
    def delivered(self, err: Any, msg: Any, headers: Headers | None) -> None:
        topic: str = msg.topic()
        if err is None:
            if not topic.endswith(".dlq"):
                self._published.get(topic, _header(headers, EVENT_TYPE_HEADER)).inc()
        elif not isinstance(_publish_error(err, topic), ProducerStoppedError):
            self._failures.get(topic).inc()

    # DispatchObserver
    def retried(self, record: Record, event_type: str) -> None:
        self._retried.get(record.topic, event_type).inc()

    def dead_lettered(self, record: Record, event_type: str | bytes | None) -> None:
        self._dead.get(record.topic, _type_text(event_type)).inc()

    def skipped(self, record: Record, event_type: str | bytes | None, reason: str) -> None:
        self._skipped.get(record.topic, _type_text(event_type), reason).inc()

    def claimed(self, record: Record, event_type: str, group: str, ran: bool) -> None:
        outcome = "claimed" if ran else "duplicate"
        if (tallies := self.tallies) is not None:
            claims = tallies.claims
            claims[(group, outcome)] = claims.get((group, outcome), 0) + 1
        else:
            self._claims.get(group, outcome).inc()
        if not ran:
            self._skipped.get(record.topic, event_type, "duplicate").inc()

    # The handler middleware.
    def middleware(self, call: EventHandler, name: str) -> EventHandler:
        """Times every run of the handler `name`; a run that returns counts as consumed."""
        if self.tallies is not None:
            return _tallied(call, self.tallies)
        durations, consumed = self._durations, self._consumed
        histogram = self.metrics.handler_duration

        async def timed(event: BaseEvent[Any], ctx: MessageContext) -> None:
            started = time.perf_counter()
            key = (ctx.record.topic, event.EVENT_TYPE)
            try:
                await call(event, ctx)
            finally:
                duration = durations.get(key)
                if duration is None:
                    duration = durations[key] = histogram.labels(*key)
                duration.observe(time.perf_counter() - started)
            consumed.get(*key).inc()

        return timed


def _tallied(call: EventHandler, tallies: Tallies) -> EventHandler:
    handlers, perf_counter = tallies.handlers, time.perf_counter

    async def timed(event: BaseEvent[Any], ctx: MessageContext) -> None:
        started = perf_counter()
        key = (ctx.record.topic, event.EVENT_TYPE)
        try:
            await call(event, ctx)
        finally:
            tally = handlers.get(key) or tallies.tally(key)
            tally.observe(perf_counter() - started)
        tally.ok += 1

    return timed


class _Children:
    """A family's label children by label values, made once each. A race between two
    threads making the same child makes it twice; prometheus-client returns the same one."""

    __slots__ = ("_family", "_made")

    def __init__(self, family: Counter) -> None:
        self._family = family
        self._made: dict[tuple[str, ...], Counter] = {}

    def get(self, *labels: str) -> Counter:
        child = self._made.get(labels)
        if child is None:
            child = self._made[labels] = self._family.labels(*labels)
        return child


def _header(headers: Headers | None, name: str) -> str:
    for key, value in headers or ():
        if key == name:
            return value.decode("utf-8", "replace") if value is not None else UNKNOWN
    return UNKNOWN


def handler_metrics(events: EventMetrics) -> HandlerMiddleware:
    """`events.middleware`, typed as the seam it plugs into."""
    return events.middleware
