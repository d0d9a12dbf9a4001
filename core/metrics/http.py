"""`HttpMetrics`: requests, statuses and durations per route template, as plain ASGI.

The route is read from the scope after the app ran: the router leaves the matched route in
`scope["route"]` (Starlette's and FastAPI's routes by their path template, the gateway's
route table entries by their prefix). A path nothing matched is one label value,
`<unmatched>`, and a method outside the standard ones is `OTHER`: a scan of random paths or
verbs adds no series. A 429 also counts as a rate-limited request of its route.
"""

from __future__ import annotations

import time

from prometheus_client import Counter
from prometheus_client.metrics import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.metrics.families import Metrics, process_metrics

UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The matched route's template (`path`, else the gateway route's `prefix`)."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        template = getattr(route, "prefix", None)
    return template if isinstance(template, str) else UNMATCHED


class HttpMetrics:
    """Wraps an ASGI app; counts every HTTP response (websockets and lifespan pass through).
    An app that raises before answering counts as a 500, as the server answers it."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics or process_metrics()
        # Label children cached per label tuple: labels() costs a lock and a dict per call.
        self._counts: dict[tuple[str, str, int], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}
        self._limited: dict[str, Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.record(scope, status, time.perf_counter() - started)

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        """Count one answered request (for a middleware that wraps `send` itself)."""
        method: str = scope["method"]
        if method not in METHODS:
            method = "OTHER"
        route = route_template(scope)
        key = (method, route, status)
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = self.metrics.http_requests.labels(
                method, route, str(status))
        count.inc()
        duration = self._durations.get((method, route))
        if duration is None:
            duration = self._durations[(method, route)] = self.metrics.http_duration.labels(
                method, route)
        duration.observe(seconds)
        if status == 429:
            limited = self._limited.get(route)
            if limited is None:
                limited = self._limited[route] = self.metrics.rate_limited.labels(route)
            limited.inc()
