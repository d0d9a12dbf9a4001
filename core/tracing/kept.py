"""A trace context kept with a row and resumed later, by whatever acts on the row next (a
saga's sweeper, after a deadline, in another process maybe): what it sends then belongs to
the trace that created the row, not to a new one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from core.tracing import provider

__all__ = ["kept_traceparent", "resumed"]

_W3C = TraceContextTextMapPropagator()


def kept_traceparent() -> str | None:
    """The current span's `traceparent`, to store; None outside a trace or tracing off."""
    if provider.tracer() is None:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def resumed(traceparent: str | None, name: str,
            attributes: dict[str, Any] | None = None) -> Iterator[None]:
    """An INTERNAL span named `name`, child of `traceparent` and current for the block; the
    block runs untraced when nothing was kept or tracing is off."""
    tracer = provider.tracer()
    if tracer is None or not traceparent:
        yield
        return
    parent = _W3C.extract({"traceparent": traceparent})
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.INTERNAL,
                                      attributes=attributes):
        yield
