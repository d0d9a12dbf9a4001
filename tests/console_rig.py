"""The operations console's test rig: the real gateway (`create_app`) on a port, in front of a
small stand-in for auth's login (`POST /auth/login` signing tokens with a test key the
gateway's verifier trusts), both served by uvicorn in the test's own event loop, on the
session's Kafka. The real auth service needs its database and migrations; what the console
depends on is only its login route's contract (email and password in, `access_token` out)."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import insert, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from core.app import create_service
from core.config import KafkaConfig, Settings
from core.db.engine import Database
from core.messaging import dlq
from core.messaging.kafka_client import KafkaAdmin, KafkaProducer, commit_offsets
from core.messaging.outbox.store import MAX_ATTEMPTS
from core.messaging.types import Headers, Record
from core.security import Security, SigningKey, StaticKeySource, TokenVerifier
from devinfra.process import free_port
from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.fixed_registry import FixedRegistry
from tests.sample_service.app import SERVICE_DIR, handlers, router
from tests.sample_service.models import Base, outbox
from tests.sample_service.service import WidgetService
from tests.security_support import AUDIENCE, ISSUER, claims, sign

PASSWORD = "correct horse battery staple"
HOSTILE = '<script>alert("owned")</script><img src=x onerror=alert(1)>'
PARKED = MAX_ATTEMPTS
"""A parked outbox row's attempts (the relay's default bound)."""
ADMIN = "admin@example.com"
USER = "user@example.com"
ACCOUNTS = {ADMIN: ("admin-1", ["users:read", "rbac:manage"]),
            USER: ("user-1", ["drivers:read"])}

ROUTES = """
[[routes]]
name = "widgets"
prefix = "/api/widgets"
service = "sample"
rewrite = "/widgets"

[[routes]]
name = "orders"
prefix = "/api/orders"
service = "order"
rewrite = "/orders"

[[routes]]
name = "auth-login"
prefix = "/api/auth/login"
service = "auth"
rewrite = "/auth/login"
methods = ["POST"]
public = true
rate_limit = "none"
"""


def auth_stand_in(key: SigningKey) -> Starlette:
    async def login(request: Request) -> JSONResponse:
        forwarded.append(request.headers.get("x-forwarded-for", ""))
        body = await request.json()
        account = ACCOUNTS.get(body.get("email"))
        if account is None or body.get("password") != PASSWORD:
            return JSONResponse({"error": {"code": "invalid_credentials"}}, status_code=401)
        subject, permissions = account
        token = sign(key, claims(sub=subject, permissions=permissions, email=body["email"],
                                 exp=int(time.time()) + 900))
        return JSONResponse({"access_token": token, "refresh_token": "r", "expires_in": 900,
                             "token_type": "Bearer"})

    async def ready(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ready", "checks": []})

    forwarded: list[str] = []
    app = Starlette(routes=[Route("/auth/login", login, methods=["POST"]),
                            Route("/health/ready", ready)])
    app.state.forwarded = forwarded
    return app


SAGA = "saga-1"


def saga_stand_in() -> Starlette:
    """The order service's saga admin API as `core.saga.saga_admin_router` answers it, with
    one saga that needs attention; a retry puts it back to compensating (as the real
    orchestrator does), and the token each call carried is kept."""
    state = {"status": "needs_attention"}
    tokens: list[str] = []

    def summary() -> dict[str, Any]:
        return {"id": SAGA, "saga_type": "ride", "status": state["status"], "step": 1,
                "step_name": "reserve_driver", "attempts": 3,
                "last_error": "compensation failed: <b>driver service away</b>",
                "deadline": None, "created_at": "2026-12-07T10:00:00Z",
                "updated_at": "2026-12-07T10:05:00Z"}

    def detail() -> dict[str, Any]:
        return {**summary(), "data": {"ride_id": "r-1"}, "correlation_id": "c-1", "history": [
            {"step": 0, "step_name": "create_order", "event": "started", "status": "running",
             "detail": None, "at": "2026-12-07T10:00:00Z"},
            {"step": 1, "step_name": "reserve_driver", "event": "failed",
             "status": "compensating", "detail": "no driver", "at": "2026-12-07T10:01:00Z"}]}

    def seen(request: Request) -> None:
        tokens.append(request.headers.get("authorization", ""))

    async def sagas(request: Request) -> JSONResponse:
        seen(request)
        wanted = request.query_params.get("status")
        data = [summary()] if wanted in (None, state["status"]) else []
        return JSONResponse({"data": data, "counts": {state["status"]: 1}})

    async def saga(request: Request) -> JSONResponse:
        seen(request)
        if request.path_params["saga_id"] != SAGA:
            return JSONResponse({"error": {"code": "not_found", "message": "no saga"}}, 404)
        return JSONResponse(detail())

    async def retry(request: Request) -> JSONResponse:
        seen(request)
        if state["status"] != "needs_attention":
            return JSONResponse({"error": {"code": "conflict",
                                           "message": "it does not need attention"}}, 409)
        state["status"] = "compensating"
        return JSONResponse(detail())

    async def ready(_: Request) -> JSONResponse:
        return JSONResponse({"status": "degraded", "checks": [
            {"name": "kafka", "status": "degraded", "latency_ms": 1.0,
             "error": "broker away"}]})

    app = Starlette(routes=[Route("/sagas", sagas), Route("/sagas/{saga_id}", saga),
                            Route("/sagas/{saga_id}/retry", retry, methods=["POST"]),
                            Route("/health/ready", ready)])
    app.state.tokens = tokens
    return app


@dataclass(frozen=True, slots=True)
class ConsoleStack:
    url: str
    """The gateway's base URL; the console is at `{url}/console`."""
    key: SigningKey
    auth: Starlette
    """The login stand-in (its `state.forwarded`: the X-Forwarded-For of each login)."""
    orders: Starlette
    """The saga stand-in (its `state.tokens`: the Authorization headers it was sent)."""
    sample_db: str | None
    sample_url: str

    def token(self, *, permissions: list[str], **overrides: Any) -> str:
        return sign(self.key, claims(permissions=permissions, **overrides))


@asynccontextmanager
async def serving(app: ASGIApp, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # its failure, raised here
            await asyncio.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def console_stack(bootstrap_servers: str, *,
                        with_sample: bool = False) -> AsyncIterator[ConsoleStack]:
    """The gateway and the stand-ins; `with_sample` adds the real sample service (built by
    `create_service`, so with core's `/ops` API) on a SQLite file and the session's Kafka."""
    key = SigningKey.generate("EdDSA", now=time.time())
    workdir = Path(tempfile.mkdtemp())
    routes = workdir / "routes.toml"
    routes.write_text(ROUTES)
    auth_port, gateway_port, order_port, sample_port = (free_port() for _ in range(4))
    verifier = TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                             audience=AUDIENCE)
    sample_db = f"sqlite+aiosqlite:///{workdir}/sample.db" if with_sample else None
    gateway = create_app(
        GatewaySettings(_env_file=None, gateway_routes_file=routes, legacy_upstream_url=None,
                        kafka_bootstrap_servers=bootstrap_servers,
                        gateway_health_interval=3600.0),
        registry=FixedRegistry({"auth": [f"http://127.0.0.1:{auth_port}"],
                                "order": [f"http://127.0.0.1:{order_port}"],
                                "sample": [f"http://127.0.0.1:{sample_port}"]}),
        verifier=verifier)
    orders, auth = saga_stand_in(), auth_stand_in(key)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(serving(auth, auth_port))
        await stack.enter_async_context(serving(orders, order_port))
        if sample_db is not None:
            sample = create_service(
                "sample", metadata=Base.metadata, service_dir=SERVICE_DIR,
                events=handlers.events, routers=[router],
                publishes=[WidgetService.events_topic], security=Security(verifier),
                settings=Settings(_env_file=None, service_name="sample",
                                  service_port=sample_port, database_url=sample_db,
                                  kafka_bootstrap_servers=bootstrap_servers,
                                  registry_backend="static",
                                  registry_static=f"sample=http://127.0.0.1:{sample_port}"))
            await stack.enter_async_context(serving(sample, sample_port))
        await stack.enter_async_context(serving(gateway, gateway_port))
        yield ConsoleStack(f"http://127.0.0.1:{gateway_port}", key, auth, orders, sample_db,
                           f"http://127.0.0.1:{sample_port}")


def parked_row(key: str, error: str) -> dict[str, object]:
    return {"event_id": str(uuid.uuid4()), "topic": "widget.events", "key": key,
            "event_type": "widget.created", "payload": b"{}", "headers": [],
            "created_at": datetime.now(UTC), "attempts": MAX_ATTEMPTS, "last_error": error}


async def park(stack: ConsoleStack, key: str, error: str) -> int:
    """A row parked in the sample service's outbox (as the relay leaves one Kafka refused)."""
    assert stack.sample_db is not None
    db = Database(stack.sample_db)
    try:
        async with db.transaction() as session:
            return int((await session.execute(insert(outbox).values(parked_row(key, error))
                                              .returning(outbox.c.id))).scalar_one())
    finally:
        await db.dispose()


async def produce(config: KafkaConfig, topic: str,
                  records: list[tuple[bytes, bytes, Headers]]) -> None:
    """(key, value, headers) records to `topic`, acknowledged."""
    producer = KafkaProducer(config)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.produce(topic, value, key, headers)
    finally:
        await producer.stop()


async def commit(config: KafkaConfig, group: str, topic: str, offsets: dict[int, int]) -> None:
    await commit_offsets(config, group, topic, offsets)


async def dead_letter(kafka_config: KafkaConfig, topic: str, header: str) -> None:
    """A dead letter on `topic`.dlq as the consumer writes it, plus a producer's header."""
    await KafkaAdmin(kafka_config).create_topics([topic, dlq.dlq_topic(topic)], partitions=1)
    original = Record(topic=topic, partition=0, offset=7, key=b"k-1",
                      value=b'{"event_type": "demo.thing_happened", "event_id": "e-1"}',
                      headers=[("x-note", header.encode())])
    headers = dlq.dead_letter_headers(original, ValueError(f"bad thing {HOSTILE}"), 3,
                                      ["handle"], "demo-group")
    assert original.value is not None and original.key is not None
    await produce(kafka_config, dlq.dlq_topic(topic), [(original.key, original.value, headers)])


async def outbox_row(stack: ConsoleStack, row: int) -> tuple[int, object] | None:
    assert stack.sample_db is not None
    db = Database(stack.sample_db)
    try:
        async with db.session() as session:
            found = (await session.execute(select(outbox.c.attempts, outbox.c.published_at)
                                           .where(outbox.c.id == row))).first()
            return None if found is None else (found[0], found[1])
    finally:
        await db.dispose()
