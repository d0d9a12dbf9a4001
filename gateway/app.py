"""`create_app`: the gateway's parts built from settings and wired, with their lifespan.

    python -m gateway                      # serves create_app (see __main__.py)

Start-up fails fast, with the reason, on a broken route table or on protected routes with
nothing to verify tokens (no `JWKS_URL`): a gateway that would let requests through unchecked,
or answer every one with 503, must not come up looking healthy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from core import logs
from core.asyncapi import ASYNCAPI_URL
from core.bases import ConfigurationError
from core.http import (
    AiohttpTransport,
    ClientConfig,
    H1Transport,
    ServiceClient,
    Transport,
)
from core.metrics import Exposition, count_security, watch_gateway
from core.resilience import BreakerConfig, RetryPolicy
from core.security import TokenVerifier, security_from_settings
from core.service_registry import ServiceRegistry, registry_from_settings
from core.tracing import ServerSpans, flush_spans, setup_tracing
from gateway.asyncapi import AsyncApiCache, asyncapi_routes
from gateway.config import GatewaySettings
from gateway.console import Console, ConsoleKafka, EdgeStatus, ServiceOps
from gateway.console import install as install_console
from gateway.edge.auth import EdgeAuth
from gateway.edge.rate_limit import edge_rate_limiter
from gateway.forwarding import GatewayApp
from gateway.middleware import EdgeMiddleware
from gateway.openapi import OpenApiCache, docs_routes
from gateway.proxy import ClientGoneError, Proxy
from gateway.readiness import gateway_readiness
from gateway.routes import (
    LEGACY,
    Route,
    RouteTable,
    RouteTableWatcher,
    load_route_table,
    parse_rate_limit,
)
from gateway.upstreams import HealthChecker, UpstreamRegistry

log = logging.getLogger(__name__)

__all__ = ["create_app"]


class _Table:
    """The route table in force; swapped whole by the watcher (requests read it once)."""

    def __init__(self, table: RouteTable) -> None:
        self.table = table

    def get(self) -> RouteTable:
        return self.table

    def set(self, table: RouteTable) -> None:
        log.info("route table reloaded: %d routes", len(table))
        self.table = table


def client_config() -> ClientConfig:
    """The upstream client's guards: per-route timeouts and attempts come with each call."""
    return ClientConfig(
        timeout=10.0, deadline=30.0,
        retry=RetryPolicy(max_attempts=2, initial_delay=0.025, max_delay=0.25),
        breaker=BreakerConfig(failure_rate=0.5, window=10.0, min_calls=10, open_for=5.0,
                              is_failure=_upstreams_fault),
        max_in_flight=512, max_waiting=256, max_wait=0.5, pool_size=1024)


def _upstreams_fault(exc: Exception) -> bool:
    """A client that left mid-upload says nothing about the upstream's health."""
    return not isinstance(exc, ClientGoneError)


def upstream_transport(settings: GatewaySettings) -> Transport:
    """The lean HTTP/1.1 client by default: it costs about half of aiohttp's CPU per proxied
    request (bench/gateway.py measures both in one run)."""
    if settings.gateway_upstream_client == "aiohttp":
        return AiohttpTransport(client_config().pool_size, proxy=True)
    return H1Transport()


def legacy_route(settings: GatewaySettings) -> Route | None:
    """What no route matches goes to the monolith, as it is: its own sessions and tokens are
    not ours to check, so the edge lets it through (the operator chose so by setting
    `LEGACY_UPSTREAM_URL`), rate-limited by the default policy."""
    if not settings.legacy_upstream_url:
        return None
    return Route(name=LEGACY, prefix="/", service=LEGACY, rewrite="", methods=frozenset(),
                 public=True, permissions=frozenset(), timeout=30.0, retries=1,
                 rate_limit=parse_rate_limit(settings.gateway_default_rate_limit, LEGACY),
                 idle_timeout=settings.gateway_idle_timeout,
                 max_streams=settings.gateway_max_streams,
                 max_client_streams=settings.gateway_max_client_streams)


def create_app(settings: GatewaySettings | None = None, *,
               registry: ServiceRegistry | None = None,
               verifier: TokenVerifier | None = None) -> ASGIApp:
    """The gateway as an ASGI app. `registry` and `verifier` replace the ones the settings
    describe (tests)."""
    settings = settings or GatewaySettings()
    table = _Table(load_route_table(settings.gateway_routes_file, settings))
    security = None if verifier is not None else security_from_settings(settings)
    verifier = verifier or (security.verifier if security else None)
    protected = [r.name for r in table.get().routes if not r.public]
    if verifier is None and protected:
        raise ConfigurationError(
            f"routes {protected} need tokens, and nothing verifies them: set JWKS_URL "
            "(the auth service's /.well-known/jwks.json)")
    upstreams = UpstreamRegistry(registry or registry_from_settings(settings),
                                 settings.legacy_upstream_url)
    health = HealthChecker(upstreams, lambda: table.get().services,
                           interval=settings.gateway_health_interval)
    client = ServiceClient(upstreams, config=client_config(),
                           transport=upstream_transport(settings),
                           instance_filter=health.healthy)
    limiter = edge_rate_limiter(settings)
    watcher = RouteTableWatcher(settings.gateway_routes_file, settings, table.set,
                                poll=settings.gateway_routes_poll_seconds)

    async def fetch_spec(service: str) -> dict[str, Any]:
        response = await client.get(service, "/openapi.json", raise_for_status=True)
        spec = response.json()
        if not isinstance(spec, dict):
            raise ValueError(f"{service}'s /openapi.json is not an object")
        return spec

    docs = OpenApiCache(table.get, fetch_spec, version=settings.service_version)

    async def fetch_asyncapi(service: str) -> dict[str, Any]:
        response = await client.get(service, ASYNCAPI_URL, raise_for_status=True)
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError(f"{service}'s {ASYNCAPI_URL} is not an object")
        return document

    events_docs = AsyncApiCache(table.get, fetch_asyncapi, title="Events",
                                version=settings.service_version)
    count_security(verifier, security.jwks if security else None)
    console_kafka = ConsoleKafka(settings.kafka())
    exposition = Exposition()
    watch_gateway(exposition, version=settings.service_version, client=client,
                  registry=upstreams, services=lambda: table.get().services)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        """Each part's stop is on the stack as soon as it may have started anything, so
        shutdown, or a start that fails half-way, stops them in reverse: the route watcher,
        the upstream checks, the token keys, the client, the limiter, the registry last
        (everything routes through it)."""
        logs.identify(settings.service_name, settings.instance_id)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(asyncio.to_thread, flush_spans)  # last, at shutdown
            await upstreams.start()
            stack.push_async_callback(upstreams.stop)
            stack.push_async_callback(limiter.close)
            stack.push_async_callback(console_kafka.stop)
            stack.push_async_callback(client.aclose)
            if security is not None:
                stack.push_async_callback(security.stop)
                await security.start()
            stack.push_async_callback(health.stop)
            await health.start()
            stack.push_async_callback(watcher.stop)
            await watcher.start()
            log.info("gateway ready: %d routes, legacy upstream %s, rate limits %s",
                     len(table.get()), settings.legacy_upstream_url or "none",
                     "shared through Redis" if settings.redis_url else "in-process")
            yield

    own = FastAPI(title="gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    own.include_router(docs_routes(docs))
    own.include_router(asyncapi_routes(events_docs))
    install_console(own, Console(
        settings=settings, verifier=verifier, client=client, table=table.get,
        kafka=console_kafka,
        edge=EdgeStatus(table=table.get, upstreams=upstreams, health=health, client=client,
                        limiter=limiter, kafka=settings.kafka()),
        ops=ServiceOps(client, table.get)))
    own.include_router(exposition.router())
    own.include_router(gateway_readiness(upstreams, table.get, limiter, health,
                                         security).router())
    app = GatewayApp(settings=settings, table=table.get, own=own,
                     auth=EdgeAuth(verifier, refused=limiter.refused_tokens(parse_rate_limit(
                         settings.gateway_refused_token_rate_limit, "refused-tokens"))),
                     limiter=limiter,
                     proxy=Proxy(client, settings, upstreams.discover),
                     legacy=legacy_route(settings))
    traced = setup_tracing(settings) is not None  # OTEL_*: a server span per request
    return EdgeMiddleware(ServerSpans(app) if traced else app)
