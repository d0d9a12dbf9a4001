"""`GatewayApp`: the per-request path, as plain ASGI (no FastAPI routing, no extra task).

In order: header limits (431), a path that could mean two things (400), the gateway's own
paths (health, docs: a small FastAPI app), the route table (or the legacy monolith, or 404),
the route's methods (405), the token (401/403), the rate limit (429), then the proxy. Each
refusal is a `GatewayError` answered here, before any byte reaches a service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from core.asyncapi import ASYNCAPI_URL
from core.http import swagger_ui_paths
from core.tracing import ROUTE
from gateway.client_address import TrustedProxies, client_ip, forwarded_headers
from gateway.config import GatewaySettings
from gateway.console import PREFIX as CONSOLE
from gateway.edge.auth import EdgeAuth, identity_headers
from gateway.edge.rate_limit import EdgeRateLimiter, client_key
from gateway.errors import GatewayError, send_error
from gateway.proxy import ClientGoneError, Proxy
from gateway.routes import Route, RouteTable

log = logging.getLogger(__name__)

METRICS = "/metrics"
# Exact paths, answered before the route table (so no route can shadow them); public.
OWN_PATHS = frozenset({"/health/live", "/health/ready", "/openapi.json", ASYNCAPI_URL, METRICS,
                       *swagger_ui_paths()})  # /docs, its redirect page and its assets


class GatewayApp:
    """Routes each request; `table()` is read per request, so a reload takes effect at once."""

    def __init__(self, *, settings: GatewaySettings, table: Callable[[], RouteTable],
                 own: ASGIApp, auth: EdgeAuth, limiter: EdgeRateLimiter, proxy: Proxy,
                 legacy: Route | None = None) -> None:
        self.table = table
        self.own = own
        self.auth = auth
        self.limiter = limiter
        self.proxy = proxy
        self.legacy = legacy
        self.trusted = TrustedProxies(settings.gateway_trusted_proxies)
        self.monitoring = TrustedProxies(settings.gateway_metrics_networks)  # a CIDR matcher
        self.max_header_bytes = settings.gateway_max_header_bytes
        self.max_headers = settings.gateway_max_headers
        self.console = settings.gateway_console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.own(scope, receive, send)
            return
        if kind != "http":  # websockets are not proxied (yet): refuse the handshake
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        try:
            await self._handle(scope, receive, send)
        except GatewayError as refusal:
            await send_error(send, refusal)
        except ClientGoneError:
            pass  # nobody is left to answer

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        self._check_headers(headers)
        path: str = scope["path"]
        check_path(path, scope.get("raw_path"))
        if path in OWN_PATHS:
            if path == METRICS:
                self._check_monitoring(scope)
            await self.own(scope, receive, send)
            return
        if self.console and path.startswith(CONSOLE) and (
                len(path) == len(CONSOLE) or path[len(CONSOLE)] == "/"):
            await self.own(scope, receive, send)  # the console checks its operator itself
            return
        route = self.table().match(path) or self.legacy
        if route is None:
            raise GatewayError(404, "no_route", "No route matches this path")
        scope["route"] = route  # its prefix is the request's route in the metrics
        scope[ROUTE] = route.prefix  # the span's name: the route, never the raw path
        method: str = scope["method"]
        if route.methods and method not in route.methods:
            allowed = ", ".join(sorted(route.methods))
            raise GatewayError(405, "method_not_allowed",
                               f"{method} is not allowed here (allowed: {allowed})",
                               {"Allow": allowed})
        ip = client_ip(scope, self.trusted)
        principal = await self.auth.authenticate(route, headers, ip)
        decision = await self.limiter.check(route, principal, ip)
        extra = forwarded_headers(scope, ip)
        if principal is not None:
            extra += identity_headers(principal)
        limit_headers = ([(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]
                         if decision is not None else [])
        client = (f"user:{principal.subject}" if principal is not None
                  else f"ip:{client_key(ip)}")  # an IPv6 client by its /64, as its quota
        await self.proxy.forward(scope, receive, send, route, route.upstream_path(path),
                                 extra, limit_headers, client)

    def _check_monitoring(self, scope: Scope) -> None:
        """`/metrics` names every route, upstream and refusal count: for the monitoring
        networks only, never the internet at the edge."""
        seen = self.monitoring.trusts(client_ip(scope, self.trusted))
        if seen is None or not seen[1]:
            raise GatewayError(403, "metrics_forbidden",
                               "/metrics is served to the monitoring networks only "
                               "(GATEWAY_METRICS_NETWORKS)")

    def _check_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        if len(headers) > self.max_headers:
            raise GatewayError(431, "too_many_headers",
                               f"More than {self.max_headers} header fields")
        size = 0
        for name, value in headers:
            size += len(name) + len(value)
        if size > self.max_header_bytes:
            raise GatewayError(431, "headers_too_large",
                               f"The headers are larger than {self.max_header_bytes} bytes")


def check_path(path: str, raw: bytes | None) -> None:
    """Refuse a path that different parts of the system could read differently: dot
    segments (`/api/users/../auth/...` would pass a prefix check and then mean another
    route), encoded slashes or backslashes (a segment for us, a separator for someone else),
    empty segments, and control characters."""
    if not path.startswith("/"):
        raise GatewayError(400, "bad_path", "The path must start with /")
    if "//" in path or "\\" in path:
        raise GatewayError(400, "bad_path", "The path has an empty segment or a backslash")
    if "/." in path:
        for segment in path.split("/"):
            if segment in (".", ".."):
                raise GatewayError(400, "bad_path", "The path has a . or .. segment")
    if raw is not None and b"%" in raw:
        lowered = raw.lower()
        if b"%2f" in lowered or b"%5c" in lowered or b"%00" in lowered:
            raise GatewayError(400, "bad_path", "The path has an encoded /, \\ or NUL")
    if not path.isprintable():
        raise GatewayError(400, "bad_path", "The path has control characters")
