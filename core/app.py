"""`create_service`: one call builds a service's FastAPI app and wires its runtime.

Nothing is opened at import or at `create_service` time; the app's lifespan builds, in order,
the database (migrated to head in development; checked to be at head elsewhere), the Kafka bus
with the database inbox as its idempotency store, the outbox writer and relay, the service
registry, the service's own hooks, the consumers, and last this instance registered in the
registry; it closes them in reverse. Everything built lands on `app.state.runtime` (routes:
`RuntimeDep`); routes reach the database and outbox through `core.bases.deps`.

Handlers are declared at import and reach the running service's parts when they run, by
typed key (`ctx.runtime[DATABASE]`, `ctx.runtime[CACHE]`; see core.runtime): the consumers
start only once every part is in the runtime, so no handler ever waits for one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from sqlalchemy import MetaData

from core import logs
from core.asyncapi.http import asyncapi_routes, document_maker
from core.asyncapi.topology import Published, topology
from core.bases.deps import attach
from core.bases.errors import ConfigurationError, install_exception_handlers
from core.config import Settings, get_settings
from core.db import migrations
from core.db.engine import Database
from core.db.models import table_key
from core.health_check import (
    Check,
    HealthChecks,
    consumer_check,
    database_check,
    kafka_check,
)
from core.http import (
    Auth,
    CallerOrService,
    ForwardCaller,
    ServiceClient,
    install_request_context,
    swagger_ui_routes,
)
from core.http.ops import ops_routes
from core.messaging.consumer import Handler
from core.messaging.dlq import KafkaDeadLetterSink
from core.messaging.event_bus import KafkaEventBus
from core.messaging.handlers import HandlerMiddleware, HandlerRegistry
from core.messaging.inbox import INBOX, DatabaseIdempotencyStore
from core.messaging.kafka_client import KafkaAdmin
from core.messaging.kafka_client.producer import DeliveryObserver
from core.messaging.outbox import LEASE, OUTBOX, OutboxRelay, OutboxWriter, relay_producer
from core.messaging.request_reply import REPLY_PRODUCER, RequestReplyClient, RequestResponder
from core.messaging.serialization import EventRegistry
from core.metrics import (
    Exposition,
    HttpMetrics,
    count_security,
    event_metrics,
    watch_service,
)
from core.projections import Projection, ProjectionRunner
from core.runtime import Runtime, RuntimeKey
from core.security.service_identity import ClientCredentials
from core.security.wiring import (
    Security,
    install_security,
    needs_verifier,
    security_from_settings,
)
from core.service_registry import Instance, ServiceRegistry
from core.service_registry.factory import registry_from_settings
from core.tracing import fastapi_telemetry, flush_spans, setup_tracing, trace_handlers

log = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S", bound=Settings)

DATABASE = RuntimeKey("database", Database)
OUTBOX_WRITER = RuntimeKey("outbox_writer", OutboxWriter)
"""The service's outbox writer: an event added through it commits with the caller's session
and wakes the relay."""
SERVICE_CLIENT = RuntimeKey("service_client", ServiceClient)
REQUEST_CLIENT = RuntimeKey("request_client", RequestReplyClient)
"""Only in a service built with `requests=True`."""

RELAY_PRODUCER_STOP = 2.0
"""Seconds the relay's producer waits for acknowledgements at shutdown, after the relay's own
drain: rows still unacknowledged then are published again by the next relay."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """Run `handler` (a function or a `HandlerRegistry`) for records on `topics`."""

    topics: str | tuple[str, ...]
    handler: Handler | RequestResponder
    """A `RequestResponder` answers every delivered request through the service's producer
    (its handlers skip the inbox: see core.messaging.request_reply)."""
    group_id: str | None = None

    @property
    def handlers(self) -> Handler:
        return self.handler.handlers if isinstance(self.handler, RequestResponder) \
            else self.handler


@dataclass(frozen=True, slots=True)
class ServiceRuntime:
    """What a running service owns, built at start-up and closed at shutdown."""

    settings: Settings
    database: Database
    bus: KafkaEventBus
    outbox: OutboxWriter
    relay: OutboxRelay
    registry: ServiceRegistry
    """Where the other services are (`discover`); this instance is registered in it."""
    services: ServiceClient
    """Calls other services by name (routes: `core.http.ServicesDep`)."""
    requests: RequestReplyClient | None = None
    """Request-reply over Kafka, when the service asked for it (`create_service(requests=True)`)."""
    parts: Runtime = dataclasses.field(default_factory=Runtime)
    """The same parts by typed key, with what the service's hooks yielded: what handlers
    see as `ctx.runtime`."""

    def __getitem__(self, key: RuntimeKey[T]) -> T:
        """The part under `key` (what its hook yielded, or a core part: `DATABASE`,
        `OUTBOX_WRITER`, `SERVICE_CLIENT`, `REQUEST_CLIENT`)."""
        return self.parts[key]

    def settings_as(self, cls: type[S]) -> S:
        """The settings as the service's own class; a service started with other settings is
        misconfigured, and says so here rather than running on defaults."""
        if not isinstance(self.settings, cls):
            raise ConfigurationError(
                f"the service runs with {type(self.settings).__qualname__}, not "
                f"{cls.__qualname__}: pass settings={cls.__qualname__}(...) to create_service")
        return self.settings


Hook = Callable[["ServiceRuntime"], AbstractAsyncContextManager[T]]
"""A service's own start-up part: entered in order once the runtime's core parts run (and
the earlier hooks' parts are in it), before the consumers start and the instance is
registered; exited after the consumers stop, at shutdown. What it yields is `runtime[key]`
(and `ctx.runtime[key]` in handlers) for the key it is declared under."""


async def get_runtime(request: Request) -> ServiceRuntime:
    """`async` though it awaits nothing: FastAPI runs a plain `def` dependency in a worker
    thread, a hop per request for an attribute read."""
    runtime = getattr(request.app.state, "runtime", None)
    if not isinstance(runtime, ServiceRuntime):
        raise ConfigurationError("the app has no runtime: build it with create_service")
    return runtime


RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]
"""The running service's parts, for routes that need more than a session (requests, hooks)."""


def create_service(
    name: str,
    *,
    metadata: MetaData,
    service_dir: str | Path,
    events: EventRegistry | None = None,
    routers: Iterable[APIRouter] = (),
    subscriptions: Sequence[Subscription] = (),
    publishes: Published = (),
    checks: Mapping[str, Check] | None = None,
    settings: Settings | None = None,
    security: Security | None = None,
    requests: bool = False,
    hooks: Mapping[RuntimeKey[Any], Hook[Any]] | None = None,
    middleware: Sequence[HandlerMiddleware] = (),
    projections: Sequence[Projection] = (),
    **fastapi_options: Any,
) -> FastAPI:
    """Build the FastAPI app of service `name`.

    `metadata` is the service's own (`Base.metadata`) and must declare the outbox and lease
    tables, and the inbox table when the service subscribes to anything, so that its
    migrations (in `service_dir/migrations`) create them. `publishes` names the topics its
    events go to: like the subscribed ones, they are created at start-up (with the settings'
    partitions and replication) before the outbox relay starts, since the brokers create no
    topic on first use. `checks` are the service's own readiness checks, beside the database,
    Kafka and consumer checks every service gets (`/health/ready`; more can be added later
    through `app.state.health`). `settings` defaults to the environment's, with
    `service_name` set to `name`.

    Tokens are verified (`core.security.deps`) with `security`, else with the auth service's
    JWKS when `JWKS_URL` is set; the issuer itself passes one over its own keys. Every request
    carries a request and correlation id (`core.http.context`), which calls to other services
    (`runtime.services`) pass on with the caller's token, or with the service's own
    (client credentials, when `SERVICE_CLIENT_ID` and `AUTH_TOKEN_URL` are set).

    `requests=True` gives the service a request-reply client (`runtime.requests`, with its
    own reply topic); a `Subscription` whose handler is a `RequestResponder` answers requests.
    `hooks` are the service's own parts by typed key (see `Hook`), entered in order after
    the runtime's core parts and before the consumers start. `middleware` wraps every handler
    run of its consumers (`core.messaging.handlers.HandlerMiddleware`), outside each registry's own.
    `projections` (`core.projections`) run beside the consumers, each with a health check.

    `/asyncapi.json` describes the service's events (core.asyncapi): what it receives, from
    its subscriptions and projections, and what it sends, from `publishes` given as a
    mapping, topic -> the event classes sent there (and `core.asyncapi.Request`s);
    `app.state.asyncapi()` returns the same document.

    With tracing configured (`OTEL_TRACES_EXPORTER`, `OTEL_TRACES_FILE`: core.tracing), each
    request gets a server span named by its route template, and each handler run a CONSUMER
    span (outermost of `middleware`, inside the metrics' own timing), continuing the trace
    its record carries.
    """
    cfg = settings or get_settings().model_copy(update={"service_name": name})
    _require_tables(metadata, needs_inbox=bool(subscriptions))
    registry = _event_registry(events, subscriptions)
    if not isinstance(publishes, Mapping):
        publishes = tuple(publishes)  # read twice: the topics, the AsyncAPI document
    for projection in projections:
        projection.check(metadata)
    topics = _topic_names(
        [*publishes, *(t for sub in subscriptions for t in _as_tuple(sub.topics)),
         *(t for p in projections for t in p.topics)])
    security = security or security_from_settings(cfg)
    if setup_tracing(cfg) is not None:  # OTEL_*: spans per request and per handler run
        middleware = (trace_handlers, *middleware)
        fastapi_options.setdefault("telemetry", fastapi_telemetry())
    counted = event_metrics()
    if security is not None:
        count_security(security.verifier, security.jwks)
    exposition = Exposition()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logs.identify(cfg.service_name, cfg.instance_id)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(asyncio.to_thread, flush_spans)  # last, at shutdown
            if security is not None:
                stack.push_async_callback(security.stop)
                await security.start()
            runtime = await _start(stack, cfg, metadata, Path(service_dir), registry,
                                   subscriptions, topics, requests,
                                   (counted.middleware, *middleware), counted.delivered)
            app.state.runtime = runtime
            stack.callback(exposition.clear)
            watch_service(exposition, version=cfg.service_version, service=name,
                          database=runtime.database, metadata=metadata,
                          consumers=lambda: runtime.bus.consumers, client=runtime.services,
                          registry=runtime.registry)
            for key, hook in (hooks or {}).items():
                await _enter_hook(stack, runtime, key, hook)
            await _start_consumers(stack, runtime.bus)
            runners = await _start_projections(stack, runtime, projections)
            await _register(stack, cfg, runtime.registry)
            attach(app, runtime.database, runtime.outbox)
            _register_checks(health, runtime, checks or {})
            for runner in runners:
                health.add(f"projection:{runner.name}", runner.check, critical=False)
            log.info("%s started (%s): database %s, kafka %s", name, cfg.environment,
                     runtime.database.dialect, cfg.kafka_bootstrap_servers)
            yield
            for check in list(health.names):  # shutting down: no longer ready
                health.remove(check)
        log.info("%s stopped", name)

    health = HealthChecks()
    # No trailing-slash redirects: Starlette builds them from the Host it was sent, which
    # behind the gateway is the instance's own address (a client would see it).
    fastapi_options.setdefault("redirect_slashes", False)
    # Swagger UI from the package, not FastAPI's CDN one (blank offline); ReDoc is CDN-only.
    docs_url = fastapi_options.pop("docs_url", "/docs")
    fastapi_options.setdefault("redoc_url", None)
    app = FastAPI(title=name, lifespan=lifespan, docs_url=None, **fastapi_options)
    if docs_url and app.openapi_url:
        app.include_router(swagger_ui_routes(title=f"{app.title} - Swagger UI",
                                       openapi_url=app.openapi_url, docs_url=docs_url))
    app.state.health = health
    app.state.asyncapi = document_maker(
        topology(name, publishes=publishes, subscriptions=subscriptions,
                 projections=projections),
        version=cfg.service_version, description=fastapi_options.get("description", ""))
    app.include_router(asyncapi_routes(app.state.asyncapi))
    app.include_router(health.router())
    app.include_router(exposition.router())
    install_exception_handlers(app)
    app.add_middleware(logs.RequestLogMiddleware)
    install_request_context(app)
    for router in routers:
        app.include_router(router)
    if security is not None:
        install_security(app, security)
        app.include_router(ops_routes(metadata))  # the operations console's (core/http/ops)
    elif needing := needs_verifier(app):
        raise ConfigurationError(
            f"{', '.join(needing[:3])}{' and more' if len(needing) > 3 else ''} read a bearer "
            "token, but nothing verifies tokens: set JWKS_URL (or pass security=)")
    app.add_middleware(HttpMetrics)  # added last, so outermost: it sees every answer
    return app


async def _start(
    stack: AsyncExitStack,
    settings: Settings,
    metadata: MetaData,
    service_dir: Path,
    events: EventRegistry,
    subscriptions: Sequence[Subscription],
    topics: Sequence[str],
    requests: bool = False,
    middleware: Sequence[HandlerMiddleware] = (),
    on_delivery: DeliveryObserver | None = None,
) -> ServiceRuntime:
    """Open each core part and register its closing on `stack`, so shutdown (or a failed
    start) closes in reverse: the instance deregisters first (callers stop coming), consumers
    drain (their handlers may still write events), the hooks exit, then the relay hands its
    lease back, then the producer flushes, then the database closes. The consumers are built
    here but started by `_start_consumers`, after the hooks."""
    database = Database(settings.database_url)
    stack.push_async_callback(database.dispose)
    await _prepare_schema(settings, service_dir, database)
    parts = Runtime()
    bus = KafkaEventBus(
        settings.kafka(), events,
        idempotency=DatabaseIdempotencyStore(database, metadata) if subscriptions else None,
        runtime=parts, middleware=middleware,
    )
    await _create_topics(settings, topics)
    for sub in subscriptions:
        bus.subscribe(sub.topics, sub.handlers, group_id=sub.group_id)
    writer = OutboxWriter(metadata, bus.serializer)  # stamps SERVICE_NAME on events
    publisher = relay_producer(settings.kafka())
    bus.producer.on_delivery = publisher.on_delivery = on_delivery
    relay = OutboxRelay(database, publisher, metadata, owner=settings.instance_id)
    writer.on_commit(relay.notify)
    stack.push_async_callback(bus.stop)  # consumers (already stopped below), then the producer
    await bus.producer.start()
    # The relay drains its rows in flight first; what the broker has not acknowledged by then
    # stays in the table for the next relay, so its producer need not wait long.
    stack.push_async_callback(publisher.stop, RELAY_PRODUCER_STOP)
    await publisher.start()
    stack.push_async_callback(relay.stop)
    await relay.start()
    registry = registry_from_settings(settings)
    stack.push_async_callback(registry.stop)
    await registry.start()  # followed before the consumers start: handlers may call services
    services = ServiceClient(registry, auth=await _service_auth(stack, settings))
    stack.push_async_callback(services.aclose)
    client = None
    if requests:
        client = RequestReplyClient(settings.kafka(), bus.producer, events,
                                    instance_id=settings.instance_id)
        stack.push_async_callback(client.stop)
        await client.start()
    runtime = ServiceRuntime(settings, database, bus, writer, relay, registry, services,
                             client, parts)
    parts.add(DATABASE, database)
    parts.add(OUTBOX_WRITER, writer)
    parts.add(SERVICE_CLIENT, services)
    parts.add(REPLY_PRODUCER, bus.producer)
    if client is not None:
        parts.add(REQUEST_CLIENT, client)
    return runtime


async def _enter_hook(stack: AsyncExitStack, runtime: ServiceRuntime, key: RuntimeKey[T],
                      hook: Hook[T]) -> None:
    value = await stack.enter_async_context(hook(runtime))
    try:
        runtime.parts.add(key, value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"hook for {key}: {exc}") from exc


async def _start_consumers(stack: AsyncExitStack, bus: KafkaEventBus) -> None:
    """Last before the instance registers: every part a handler may ask for is in the
    runtime by now, and the consumers stop first at shutdown, before the hooks exit."""
    for consumer in bus.consumers.values():
        stack.push_async_callback(consumer.stop)
        await consumer.start()


async def _start_projections(stack: AsyncExitStack, runtime: ServiceRuntime,
                             projections: Sequence[Projection]) -> list[ProjectionRunner]:
    """Each projection reads from its stored positions (no consumer group) and dead-letters
    through the bus's producer; they stop with the consumers, before the hooks exit."""
    sink = KafkaDeadLetterSink(runtime.bus.producer)
    runners = [ProjectionRunner(p, runtime.database, runtime.settings.kafka(),
                                dead_letters=sink) for p in projections]
    for runner in runners:
        stack.push_async_callback(runner.stop)
        await runner.start()
    return runners


async def _register(stack: AsyncExitStack, settings: Settings,
                    registry: ServiceRegistry) -> None:
    """Announce this instance last, once everything it serves with runs, so no caller is sent
    to a half-started instance; deregistering is the first thing shutdown does, so callers
    stop coming before the consumers drain. REGISTRY_BACKEND=static with an empty
    REGISTRY_STATIC announces nothing (tests, tools)."""
    stack.push_async_callback(registry.deregister)
    await registry.register(Instance(
        service=settings.service_name, instance_id=settings.instance_id,
        url=settings.advertised_url(), version=settings.service_version))


async def _service_auth(stack: AsyncExitStack, settings: Settings) -> Auth:
    """The caller's token, forwarded; outside a request (or without one), the service's own
    when it has client credentials."""
    if not (settings.service_client_id and settings.service_client_secret
            and settings.auth_token_url):
        return ForwardCaller()
    credentials = ClientCredentials(settings.auth_token_url, settings.service_client_id,
                                    settings.service_client_secret)
    stack.push_async_callback(credentials.aclose)
    return CallerOrService(credentials.token)


def _register_checks(
    health: HealthChecks, runtime: ServiceRuntime, checks: Mapping[str, Check]
) -> None:
    health.add("database", database_check(runtime.database))
    # Ridden out, so they degrade readiness, never fail it: events wait in the outbox (and
    # in the broker for consumers), other services are found in the registry's kept table.
    health.add("kafka", kafka_check(runtime.bus.producer), critical=False)
    for group, consumer in runtime.bus.consumers.items():
        health.add(f"consumer:{group}", consumer_check(consumer), critical=False)
    health.add("registry", runtime.registry.check, critical=False)
    for name, check in checks.items():
        health.add(name, check)


async def _prepare_schema(settings: Settings, service_dir: Path, database: Database) -> None:
    """Development migrates to head at start-up; elsewhere migrating is a deploy step
    (`python -m core migrate`), and a database behind the code refuses to start."""
    if settings.environment == "development":
        await migrations.upgrade(service_dir, database)
        return
    at, expected = await migrations.current(service_dir, database), migrations.heads(service_dir)
    if set(at) != set(expected):
        raise migrations.MigrationError(
            f"the database is at {list(at) or 'no revision'}, the code expects "
            f"{list(expected)}: run `python -m core migrate {service_dir}` first")


async def _create_topics(settings: Settings, topics: Sequence[str]) -> None:
    """Subscribed topics must exist before the consumer joins: a consumer subscribed to a
    missing topic only notices its creation at the next metadata refresh (minutes). Published
    ones must exist before the relay sends to them: the brokers create none on first use, and
    a row to a missing topic is parked (see core.messaging.outbox.relay)."""
    await KafkaAdmin(settings.kafka()).create_topics(topics)


_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def _topic_names(topics: Iterable[str]) -> list[str]:
    """The distinct topic names, sorted; refuses names Kafka would refuse, before anything
    starts."""
    names = sorted(set(topics))
    bad = [name for name in names if not _TOPIC_NAME.fullmatch(name) or name in (".", "..")]
    if bad:
        raise ConfigurationError(
            f"invalid topic names {bad}: Kafka allows 1 to 249 of a-z, A-Z, 0-9, '.', '_', '-'")
    return names


def _as_tuple(topics: str | tuple[str, ...]) -> tuple[str, ...]:
    return (topics,) if isinstance(topics, str) else topics


def _event_registry(
    events: EventRegistry | None, subscriptions: Sequence[Subscription]
) -> EventRegistry:
    """The one registry the bus decodes with: `events`, or the handler registry's own when
    there is exactly one; every event a handler registry asks for must be in it."""
    theirs = {id(s.handlers.events): s.handlers.events for s in subscriptions
              if isinstance(s.handlers, HandlerRegistry)}
    if events is None:
        events = next(iter(theirs.values())) if len(theirs) == 1 else EventRegistry()
    missing = sorted(
        f"{cls.EVENT_TYPE} v{cls.EVENT_VERSION}"
        for registry in theirs.values() if registry is not events
        for cls in registry if events.get(cls.EVENT_TYPE, cls.EVENT_VERSION) is not cls)
    if missing:
        raise ConfigurationError(
            f"events handled but not in the service's registry: {', '.join(missing)}; pass "
            "one EventRegistry as events= and build the HandlerRegistry objects on it")
    return events


def _require_tables(metadata: MetaData, *, needs_inbox: bool) -> None:
    needed = [OUTBOX, LEASE] + ([INBOX] if needs_inbox else [])
    missing = [table for table in needed if table_key(metadata, table) not in metadata.tables]
    if missing:
        raise ConfigurationError(
            f"the service's metadata has no {', '.join(missing)} table: declare "
            "messaging_tables(Base.metadata) (core.messaging) in its models, "
            "then make a migration")
