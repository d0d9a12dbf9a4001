"""Spans recorded in memory, for tests::

    with recording() as spans:
        ...
    spans.get_finished_spans()

Core's spans (Kafka, the gateway's, and FastAPI's in apps built inside the block) go to the
recorder; OpenTelemetry's global provider is left alone, so nothing outside the block traces.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.tracing import provider

__all__ = ["recording"]


@contextmanager
def recording(service: str = "test") -> Iterator[InMemorySpanExporter]:
    """Trace into memory for the block, then turn tracing back to what it was."""
    exporter = InMemorySpanExporter()
    recorder = TracerProvider(resource=Resource.create({"service.name": service}))
    recorder.add_span_processor(SimpleSpanProcessor(exporter))
    previous = provider.install(recorder)
    try:
        yield exporter
    finally:
        provider.install(previous)
        recorder.shutdown()
