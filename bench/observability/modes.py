"""The core bus contender of `bench.bus`, run in one observability mode at a time.

Each mode wires what a service runs with, through core's own code: metrics as
`create_service` wires them (`event_metrics()`: its handler middleware outermost, its
delivery counting on the producer, the dispatcher's observer); tracing as `setup_tracing`
makes it (a provider core's producer wrapper and `trace_handlers` read), but with a
`BatchSpanProcessor` over an exporter that drops every batch, so what is measured is making
the spans, not writing them. The provider and the observer are process-wide, so a mode is
put in force when its producer or consumer starts (the measurements run one at a time).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from bench.bus.contenders.core_bus import CoreContender
from bench.common.payload import BenchEvent
from core.config import KafkaConfig
from core.messaging import HandlerMiddleware
from core.messaging.dispatch import RecordDispatcher
from core.messaging.event_bus import KafkaEventBus
from core.metrics import EventMetrics, event_metrics
from core.tracing import provider as tracing
from core.tracing import trace_handlers

SAMPLED, UNSAMPLED = "sampled", "unsampled"


@dataclass(frozen=True, slots=True)
class Mode:
    key: str
    label: str
    metrics: bool
    tracing: str
    """"" (off), SAMPLED (every record traced) or UNSAMPLED (sampled out upstream)."""


OFF = "off"
MODES = (
    Mode(OFF, "off", False, ""),
    Mode("metrics", "metrics", True, ""),
    Mode("traced", "tracing, all sampled", False, SAMPLED),
    Mode("sampled-out", "tracing, sampled out", False, UNSAMPLED),
    Mode("both", "metrics + tracing", True, SAMPLED),
)


class DiscardingExporter(SpanExporter):
    """Takes every batch and drops it: the batch processor's queue and thread run as in a
    service, the export itself costs nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


_provider: TracerProvider | None = None


def bench_provider() -> TracerProvider:
    """As `setup_tracing` builds it (parentbased_always_on, the SDK's default sampler, and a
    batch processor with the `OTEL_BSP_*` defaults), over `DiscardingExporter`."""
    global _provider
    if _provider is None:
        _provider = TracerProvider(resource=Resource.create({"service.name": "bench"}),
                                   sampler=ParentBased(ALWAYS_ON))
        _provider.add_span_processor(BatchSpanProcessor(DiscardingExporter()))
    return _provider


def enter(mode: Mode, metrics: EventMetrics) -> None:
    """Put `mode`'s process-wide parts in force: the tracer core reads, the observer."""
    tracing.install(bench_provider() if mode.tracing else None)
    RecordDispatcher.observer = metrics if mode.metrics else None


@contextlib.contextmanager
def upstream(mode: Mode) -> Iterator[None]:
    """What a publish runs inside: for SAMPLED a request's span (each record gets a PRODUCER
    span under it), for UNSAMPLED a caller's trace that was sampled out (each record only
    carries its `traceparent` on), else nothing (no trace: core makes no spans)."""
    if mode.tracing == SAMPLED:
        tracer = tracing.tracer()
        assert tracer is not None
        with tracer.start_as_current_span("bench request", kind=SpanKind.SERVER):
            yield
    elif mode.tracing == UNSAMPLED:
        parent = SpanContext(random.getrandbits(128), random.getrandbits(64), is_remote=True,
                             trace_flags=TraceFlags(TraceFlags.DEFAULT))
        token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
        try:
            yield
        finally:
            otel_context.detach(token)
    else:
        yield


class ObservedCore(CoreContender):
    """`CoreContender` with `mode`'s middleware and delivery counting; its consume topic is
    filled in its own mode, so the records carry the `traceparent` that mode sends."""

    def __init__(self, bootstrap_servers: str, payload_size: int, mode: Mode) -> None:
        super().__init__(bootstrap_servers, payload_size)
        self.mode = mode
        self.key = f"obs-{mode.key}"
        self.label = mode.label
        self.notes = ""
        self._metrics = event_metrics()

    def _bus(self, group: str) -> KafkaEventBus:
        enter(self.mode, self._metrics)
        middleware: list[HandlerMiddleware] = []
        if self.mode.metrics:  # create_service's order: metrics outermost, then the spans
            middleware.append(self._metrics.middleware)
        if self.mode.tracing:
            middleware.append(trace_handlers)
        bus = KafkaEventBus(KafkaConfig(bootstrap_servers=self._bootstrap, client_id="bench-obs",
                                        consumer_group=group), middleware=middleware)
        bus.events.register(BenchEvent)
        if self.mode.metrics:
            bus.producer.on_delivery = self._metrics.delivered
        return bus

    async def publish_all(self, topic: str, count: int) -> None:
        with upstream(self.mode):
            await super().publish_all(topic, count)

    async def send(self, topic: str, seq: int) -> Awaitable[object]:
        with upstream(self.mode):  # the task it starts keeps this context
            return await super().send(topic, seq)
