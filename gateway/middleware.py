"""`EdgeMiddleware`: what a service gets from three ASGI middlewares, in one, for the gateway.

A service's app runs under `HttpMetrics`, `RequestContextMiddleware` and
`RequestLogMiddleware`, each wrapping `send` in a closure of its own. The gateway answers
every request with a start and two body messages, so that is nine wrapper calls per request
for three jobs; `bench.gateway --profile` measured them at about a tenth of the gateway's CPU.
This does the same three jobs around one wrapper, with the same functions
(`core.http.context`'s ids, `core.logs`'s binding, `HttpMetrics.record`):

- the request and correlation ids: the caller's when sane, new ones otherwise, bound for the
  request (the client sends them on) and echoed on the answer;
- log lines written while the request is served name it;
- requests, statuses and durations per route are counted (an app that raises before
  answering counts as a 500, as the server answers it).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import correlation
from core.http import context
from core.logs import bind_request, unbind_request
from core.metrics import HttpMetrics


class EdgeMiddleware:
    """Wraps the gateway's app; lifespan and websocket scopes pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics or HttpMetrics(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        current, correlation_id = context.request_ids(scope["headers"])
        echoed = context.echoed_ids(current, correlation_id)
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = context.with_ids(message, echoed)
            await send(message)

        bound = context.bind(current)
        ids = correlation.bind(correlation_id)
        logged = bind_request(scope)
        try:
            await self.app(scope, receive, sending)
        finally:
            unbind_request(logged)
            correlation.unbind(ids)
            context.unbind(bound)
            self.metrics.record(scope, status, time.perf_counter() - started)
