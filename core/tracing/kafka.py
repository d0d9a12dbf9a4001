"""W3C trace context through Kafka record headers, in core's own producer and consumer.

Producing (`KafkaProducer`): a record sent inside a trace gets a PRODUCER span, ended when
the broker acknowledges it, and that span's `traceparent`/`tracestate` in its headers. Its
parent is the `traceparent` the headers already carry (an outbox row stores the one current
when the event was written, so the relay's send continues the request that wrote it), else
the current span. A record sent outside any trace (the registry's heartbeats, a job's
events) carries none: Kafka never starts a trace of its own.

Consuming (`trace_handlers`, a handler middleware): each handler run gets a CONSUMER span,
a child of the record's `traceparent` (a new trace when it has none), current while the
handler runs, inside the handler's own task: what the handler writes to the outbox, sends or
logs belongs to it. A handler's exception marks the span as an error.

Sampling (`OTEL_TRACES_SAMPLER`, e.g. `parentbased_traceidratio`): a record whose trace was
sampled out gets no span on either side, only its `traceparent` passed on, so the decision
made at the edge holds downstream and costs a few microseconds, not a span's tens.

The contrib confluent-kafka instrumentation does not fit this consumer: it starts spans on
the polling thread, links rather than parents, and skips tuple headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from core.tracing import provider

if TYPE_CHECKING:
    from core.messaging.events import BaseEvent
    from core.messaging.types import EventHandler, Headers, MessageContext

__all__ = ["TRACEPARENT", "TRACESTATE", "context_headers", "record_context", "trace_handlers",
           "traced_batch", "traced_send"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
_W3C = TraceContextTextMapPropagator()
T = TypeVar("T")
Batch = Sequence[tuple[bytes | None, bytes | str | None, "Headers"]]


class _HeaderGetter(Getter["Headers"]):
    def get(self, carrier: Headers, key: str) -> list[str] | None:
        found = [v.decode("latin-1") for k, v in carrier if k == key and v is not None]
        return found or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k for k, _ in carrier]


class _HeaderSetter(Setter["Headers"]):
    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier.append((key, value.encode("latin-1")))


_GETTER = _HeaderGetter()
_SETTER = _HeaderSetter()


def record_context(headers: Headers | None) -> Context | None:
    """The trace context a record's headers carry, or None when they carry none."""
    if not headers or not any(k == TRACEPARENT for k, _ in headers):
        return None
    return _W3C.extract(headers, getter=_GETTER)


def _publish_span(tracer: trace.Tracer, topic: str,
                  headers: Headers | None) -> tuple[Headers | None, Span | None]:
    """The PRODUCER span of one record and the headers that carry it, or (headers, None)
    when the record belongs to no trace."""
    parent = record_context(headers)
    above = trace.get_current_span(parent).get_span_context()  # the headers', else current
    if not above.is_valid:
        return headers, None
    if not above.trace_flags.sampled:  # sampled out upstream: pass that on, at no span's cost
        if parent is not None:
            return headers, None
        passed: Headers = list(headers or ())
        _W3C.inject(passed, setter=_SETTER)
        return passed, None
    # Few attributes: the SDK checks each one, and that is most of a span's cost. Where the
    # record landed is on the CONSUMER span.
    span = tracer.start_span(f"send {topic}", context=parent, kind=SpanKind.PRODUCER,
                             attributes={"messaging.system": "kafka",
                                         "messaging.destination.name": topic})
    carried: Headers = [(k, v) for k, v in headers or () if k not in _TRACE_HEADERS]
    _W3C.inject(carried, context=trace.set_span_in_context(span), setter=_SETTER)
    return carried, span


def _end_on_ack(span: Span, ack: asyncio.Future[Any]) -> None:
    def done(fut: asyncio.Future[Any]) -> None:
        error = None if fut.cancelled() else fut.exception()
        if fut.cancelled() or error is not None:
            span.set_status(Status(StatusCode.ERROR, repr(error) if error else "cancelled"))
        span.end()

    ack.add_done_callback(done)


def traced_send(send: Callable[[str, bytes | None, bytes | str | None, Headers | None],
                               asyncio.Future[T]],
                topic: str, value: bytes | None, key: bytes | str | None,
                headers: Headers | None) -> asyncio.Future[T]:
    """`send(topic, value, key, headers)`, the record carrying its PRODUCER span, which ends
    with the acknowledgement future `send` returns (or at once, when `send` raises)."""
    tracer = provider.tracer()
    if tracer is None:
        return send(topic, value, key, headers)
    headers, span = _publish_span(tracer, topic, headers)
    if span is None:
        return send(topic, value, key, headers)
    try:
        ack = send(topic, value, key, headers)
    except BaseException as exc:
        span.set_status(Status(StatusCode.ERROR, repr(exc)))
        span.end()
        raise
    _end_on_ack(span, ack)
    return ack


async def traced_batch(send: Callable[[str, Batch], Awaitable[None]], topic: str,
                       records: Batch) -> None:
    """`send(topic, records)`, each record carrying its own PRODUCER span, all ended when the
    batch is acknowledged (as errors when it fails)."""
    tracer = provider.tracer()
    if tracer is None:
        await send(topic, records)
        return
    spans: list[Span] = []
    carried = []
    for value, key, headers in records:
        new, span = _publish_span(tracer, topic, headers)
        carried.append((value, key, new if new is not None else []))
        if span is not None:
            spans.append(span)
    try:
        await send(topic, carried)
    except BaseException as exc:
        for span in spans:
            span.set_status(Status(StatusCode.ERROR, repr(exc)))
        raise
    finally:
        for span in spans:
            span.end()


def trace_handlers(call: EventHandler, name: str) -> EventHandler:
    """Handler middleware: a CONSUMER span around each run of the handler (see the module
    doc). Outermost, so the other middleware (logs, metrics) runs inside the span."""

    async def run(event: BaseEvent[Any], ctx: MessageContext) -> None:
        tracer = provider.tracer()
        if tracer is None:
            await call(event, ctx)
            return
        record = ctx.record
        parent = record_context(record.headers)
        if parent is not None and \
                not trace.get_current_span(parent).get_span_context().trace_flags.sampled:
            token = otel_context.attach(parent)  # sampled out upstream: no span, passed on
            try:
                await call(event, ctx)
            finally:
                otel_context.detach(token)
            return
        attributes: dict[str, Any] = {  # few: the SDK checks each one (most of a span's cost)
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "messaging.consumer.group.name": ctx.consumer_group,
            "messaging.message.id": str(event.event_id),
            "handler": name,
        }
        if ctx.attempt > 1:
            attributes["attempt"] = ctx.attempt
        if event.correlation_id:
            attributes["messaging.message.conversation_id"] = event.correlation_id
        with tracer.start_as_current_span(
                f"process {record.topic} {event.EVENT_TYPE}",
                context=parent or Context(),
                kind=SpanKind.CONSUMER, attributes=attributes):
            await call(event, ctx)

    return run


def context_headers(headers: Headers) -> Headers:
    """The current span's `traceparent`/`tracestate` as record headers, for an event written
    now and sent later (the outbox row keeps them); none when `headers` already carry a
    trace, outside a trace, or with tracing off."""
    if provider.tracer() is None or any(k == TRACEPARENT for k, _ in headers):
        return []
    carried: Headers = []
    _W3C.inject(carried, setter=_SETTER)
    return carried
