"""The process's tracer provider, built once from the settings (the standard `OTEL_*` names).

Tracing is off unless `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`) or
`OTEL_TRACES_FILE` names a JSON-lines file; off, nothing of the SDK is imported and every
traced path in core costs one call that finds `tracer()` is None. On, the provider is also
set as OpenTelemetry's global one, so FastAPI's own server spans and any contrib
instrumentation use it, and `opentelemetry.trace.get_current_span()` (the log lines' ids)
sees core's spans.

Process-wide on purpose: OpenTelemetry's provider is a process global (set once), and the
Kafka client and the service client reach it here rather than through every constructor.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from core.config import Settings

__all__ = ["TracingError", "flush_spans", "setup_tracing", "tracer"]

TRACER_NAME = "core"
EXPORTERS = ("otlp", "console", "none")

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


class TracingError(ValueError):
    """The tracing settings name an exporter that does not exist."""


def tracer() -> trace.Tracer | None:
    """The tracer core's own spans come from, or None when tracing is off."""
    return _tracer


def provider() -> TracerProvider | None:
    """The provider in force (None: tracing is off)."""
    return _provider


def install(new: TracerProvider | None) -> TracerProvider | None:
    """Make `new` the provider core's spans come from (None: off); returns the previous one.
    `setup_tracing` and `core.tracing.testing.recording` call it; nothing else should."""
    global _provider, _tracer
    previous = _provider
    _provider = new
    _tracer = new.get_tracer(TRACER_NAME) if new is not None else None
    return previous


def exporters(settings: Settings) -> list[SpanExporter]:
    """The exporters the settings name; empty when tracing is off."""
    names = {n.strip().lower() for n in settings.otel_traces_exporter.split(",") if n.strip()}
    unknown = sorted(names - set(EXPORTERS))
    if unknown:
        raise TracingError(f"OTEL_TRACES_EXPORTER names {unknown}: use {', '.join(EXPORTERS)}"
                           " (and OTEL_TRACES_FILE for a JSON-lines file)")
    found: list[SpanExporter] = []
    if "otlp" in names:  # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, ... say where
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        found.append(OTLPSpanExporter())
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        found.append(ConsoleSpanExporter())
    if settings.otel_traces_file:
        from core.tracing.files import JsonLinesSpanExporter
        found.append(JsonLinesSpanExporter(settings.otel_traces_file))
    return found


def setup_tracing(settings: Settings) -> TracerProvider | None:
    """The provider for this process, built on the first call that finds tracing configured
    (later calls return it: a process has one); None when tracing is off. Spans leave in
    batches (`OTEL_BSP_*` tune them), never on the request's path."""
    if _provider is not None:
        return _provider
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    found = exporters(settings)
    if not found:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; what is named here wins.
    resource = Resource.create({
        "service.name": settings.otel_service_name or settings.service_name,
        "service.instance.id": settings.instance_id,
        "service.version": settings.service_version,
    })
    built = TracerProvider(resource=resource)
    for exporter in found:
        built.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(built)
    install(built)
    return built


def flush_spans(timeout_millis: int = 5000) -> None:
    """Export the spans still batched (at shutdown: the SDK's own exit hook runs only when
    the interpreter exits normally)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis)
