"""Trace context over HTTP: what an outgoing call carries, and the server span of an ASGI
app that is not a FastAPI app (the gateway; FastAPI apps get theirs from FastAPI itself,
see `fastapi_telemetry`)."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.tracing import provider

__all__ = ["ROUTE", "ServerSpans", "fastapi_telemetry", "trace_headers", "untraced_path"]

ROUTE = "core.tracing.route"
"""The scope key an app sets to the route template a request matched: `ServerSpans` names the
span after it (`POST /api/auth`), never after the raw path, so span names stay few."""
UNTRACED_PATHS = ("/health/", "/metrics")
_W3C = TraceContextTextMapPropagator()
_TRACE_HEADERS = (b"traceparent", b"tracestate")


def untraced_path(scope: MutableMapping[str, Any]) -> bool:
    """Probes (health checks, scrapes) every few seconds would each be a trace of their own."""
    path: str = scope.get("path", "")
    return path.startswith(UNTRACED_PATHS)


def trace_headers() -> list[tuple[str, str]]:
    """`traceparent` (and `tracestate`) of the current span, for an outgoing call; none
    outside a trace or with tracing off."""
    if provider.tracer() is None:
        return []
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return list(carrier.items())


def fastapi_telemetry() -> dict[str, Any] | None:
    """`FastAPI(telemetry=...)` for core's provider: server spans named by route template,
    probes left out; FastAPI's per-dependency spans off (they would multiply each request's
    spans for little). None when tracing is off."""
    found = provider.provider()
    if found is None:
        return None
    exclude: Callable[[MutableMapping[str, Any]], bool] = untraced_path
    return {"tracer_provider": found, "operation_spans": False, "exclude": exclude}


class ServerSpans:
    """A SERVER span per HTTP request, continuing the caller's `traceparent` (a new trace
    without one). The incoming trace headers are taken off the request, so what the app
    forwards carries its own span's (`trace_headers`), never the client's twice."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = provider.tracer()
        if tracer is None or scope["type"] != "http" or untraced_path(scope):
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        kept = []
        for name, value in scope["headers"]:
            if name in _TRACE_HEADERS:
                carrier[name.decode()] = value.decode("latin-1")
            else:
                kept.append((name, value))
        scope["headers"] = kept
        method: str = scope["method"]
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": scope["path"]}
        with tracer.start_as_current_span(method, context=_W3C.extract(carrier),
                                          kind=SpanKind.SERVER, attributes=attributes,
                                          set_status_on_exception=True) as span:

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, send_status)
            finally:
                route = scope.get(ROUTE)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
