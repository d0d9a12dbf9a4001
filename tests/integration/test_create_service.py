"""`create_service` runs a real service: the sample service in its own process, over HTTP, on
real Kafka, with SQLite and PostgreSQL; and refuses to start on a database behind its code."""

from __future__ import annotations

import importlib
import json
import signal
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy import func, select, text

from core.app import DATABASE, RuntimeDep, ServiceRuntime, Subscription, create_service
from core.bases.errors import ConfigurationError
from core.config import KafkaConfig, Settings
from core.db import migrations
from core.db.engine import Database
from core.db.scaffold import init_migrations
from core.messaging.handlers import HandlerRegistry
from core.messaging.inbox import DatabaseIdempotencyStore
from core.messaging.kafka_client import KafkaAdmin, read_topic
from core.messaging.outbox import outbox_table
from core.messaging.request_reply import RequestResponder
from core.messaging.serialization import EventRegistry
from core.messaging.types import MessageContext
from core.runtime import RuntimeKey
from tests.helpers import eventually, unique
from tests.helpers.events import GetQuote, Quote, QuoteQuery, priced
from tests.helpers.service import Spawn, serve
from tests.integration.databases import DatabaseFactory
from tests.outbox_service import MoneyDeposited, deposit
from tests.sample_service.app import AUDIT_HANDLER, SERVICE_DIR, service
from tests.sample_service.models import Base
from tests.sample_service.service import WidgetService


async def test_service_migrates_serves_publishes_and_consumes(
    db_url: str, kafka_config: KafkaConfig, spawn: Spawn
) -> None:
    served = await serve(spawn, "tests.integration.procs.sample_app", database_url=db_url,
                         kafka=kafka_config, ready_path="/widgets")
    base, proc = served.base_url, served.proc

    sku = unique("SKU").upper()
    async with httpx.AsyncClient(base_url=base) as http:
        created = await http.post("/widgets", json={"name": "gear", "sku": sku,
                                                    "price_cents": 250})
        refused = await http.post("/widgets", json={"name": "gear", "sku": "x",
                                                    "price_cents": -1})
    assert created.status_code == 201, created.text
    assert refused.status_code == 422 and refused.json()["error"]["fields"]
    widget_id = created.json()["data"]["id"]

    # The outbox relay published the event the create committed...
    mine: list[dict[str, object]] = []

    async def published() -> bool:
        records = await read_topic(kafka_config, WidgetService.events_topic)
        mine[:] = [e for e in (json.loads(r.value or b"{}") for r in records)
                   if e.get("aggregate_id") == widget_id]
        return bool(mine)

    await eventually(published, interval=0.2)
    (event,) = mine
    assert event["event_type"] == "widget.created"

    # ...and the service's own consumer ran its handler once, through the database inbox.
    db = Database(db_url)
    try:
        inbox = DatabaseIdempotencyStore(db, Base.metadata)
        await eventually(lambda: inbox.seen(str(event["event_id"]), AUDIT_HANDLER),
                         interval=0.2)
        # Development start-up migrated the fresh database to the code's head.
        assert set(await migrations.current(SERVICE_DIR, db)) == set(migrations.heads(SERVICE_DIR))
    finally:
        await db.dispose()

    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    # uvicorn re-raises the SIGTERM it handled once the app has shut down.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "core.app: sample stopped" in output, output


async def test_outside_development_a_database_behind_the_code_refuses_to_start(
    tmp_path: Path, kafka_config: KafkaConfig
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sample.db'}"
    settings = Settings(environment="test", service_name="sample", database_url=url,
                        kafka_bootstrap_servers=kafka_config.bootstrap_servers,
                        kafka_consumer_group=unique("sample"))
    app = service(settings)
    with pytest.raises(migrations.MigrationError, match="python -m core migrate"):
        async with app.router.lifespan_context(app):
            pass

    db = Database(url)
    await migrations.upgrade(SERVICE_DIR, db)
    await db.dispose()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            listed = await http.get("/widgets")
        assert listed.status_code == 200 and listed.json()["data"] == []
        await eventually(lambda: app.state.runtime.relay.holds_lease)
    assert not app.state.runtime.relay.holds_lease, "the relay kept its lease after shutdown"


async def test_the_topics_a_service_publishes_to_are_created_at_start_up(
    tmp_path: Path, kafka_config: KafkaConfig
) -> None:
    """The brokers create no topic on first use: the topics a service declares it publishes to
    exist, with the configured partitions, before its relay sends anything."""
    audit = unique("audit")
    settings = Settings(environment="development", service_name="sample",
                        database_url=f"sqlite+aiosqlite:///{tmp_path / 'sample.db'}",
                        kafka_bootstrap_servers=kafka_config.bootstrap_servers,
                        kafka_consumer_group=unique("sample"), kafka_topic_partitions=2)
    app = create_service("sample", metadata=Base.metadata, service_dir=SERVICE_DIR,
                         publishes=[audit], settings=settings)
    async with app.router.lifespan_context(app):
        assert (await KafkaAdmin(kafka_config).topics()).get(audit) == 2


async def test_events_published_through_the_service_carry_its_name(
    tmp_path: Path, kafka_config: KafkaConfig
) -> None:
    """`BaseService.publish_event` goes through the service's outbox writer, which stamps the
    envelope's `service_name` from the settings."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'sample.db'}"
    settings = Settings(environment="development", service_name="sample", database_url=url,
                        kafka_bootstrap_servers=kafka_config.bootstrap_servers,
                        kafka_consumer_group=unique("sample"))
    app = service(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            created = await http.post("/widgets", json={"name": "gear", "sku": "SKU-1",
                                                        "price_cents": 250})
        assert created.status_code == 201, created.text
        async with app.state.runtime.database.session() as session:
            (payload,) = (await session.execute(select(outbox_table(Base.metadata).c.payload))
                          ).scalars().all()
    envelope = json.loads(payload)
    assert envelope["aggregate_id"] == created.json()["data"]["id"]
    assert envelope["service_name"] == "sample"


SCHEMA_MODELS = """
from core.db.models import service_metadata
from core.messaging.inbox import inbox_table
from core.messaging.outbox import lease_table, outbox_table

metadata = service_metadata(schema={schema!r})
outbox_table(metadata)
lease_table(metadata)
inbox_table(metadata)
"""


async def test_a_service_in_its_own_postgres_schema_publishes_and_consumes(
    postgres: Any, tmp_path: Path, kafka_config: KafkaConfig
) -> None:
    """`service_metadata(schema=...)` keys tables as `schema.name`: the outbox, the inbox and
    `create_service` must find them there, and write nothing to `public`."""
    schema = unique("ledger").replace("-", "_")
    package = tmp_path / schema
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(SCHEMA_MODELS.format(schema=schema))
    databases = DatabaseFactory("postgres", tmp_path, postgres)
    try:
        url = await databases.new()
        init_migrations(package, f"{schema}.models:metadata")  # puts tmp_path on sys.path
        metadata = importlib.import_module(f"{schema}.models").metadata
        assert await migrations.make_migration(package, "ledger", database=url) is not None
        await migrations.upgrade(package, url)

        topic = unique("ledger")
        handlers = HandlerRegistry()

        @handlers.handles(MoneyDeposited, name="ledger.book")
        async def book(event: MoneyDeposited) -> None:
            """Its effect is its inbox row, in the service's schema."""

        settings = Settings(environment="test", service_name="ledger", database_url=url,
                            kafka_bootstrap_servers=kafka_config.bootstrap_servers,
                            kafka_consumer_group=unique("ledger"))
        app = create_service("ledger", metadata=metadata, service_dir=package,
                             subscriptions=[Subscription(topic, handlers)], settings=settings)
        event = deposit("acct-1", 0)
        async with app.router.lifespan_context(app):
            runtime = app.state.runtime
            async with runtime.database.transaction() as session:
                await runtime.outbox.add(session, topic, event)
            inbox = DatabaseIdempotencyStore(runtime.database, metadata)
            await eventually(lambda: inbox.seen(str(event.event_id), "ledger.book"))

            async def relayed() -> bool:
                return await runtime.relay.backlog() == 0

            await eventually(relayed)

        db = Database(url)
        try:
            async with db.session() as session:
                published = await session.scalar(
                    select(func.count()).select_from(outbox_table(metadata))
                    .where(outbox_table(metadata).c.published_at.is_not(None)))
                public = await session.scalar(text(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = 'public'"))
            assert published == 1
            assert public == 0, "a table landed in public"
        finally:
            await db.dispose()
    finally:
        await databases.drop_all()


PROBE = RuntimeKey("probe", dict)


async def test_a_service_answers_requests_asks_others_and_runs_its_hooks_before_registering(
    tmp_path: Path, kafka_config: KafkaConfig
) -> None:
    """`requests=True` gives the runtime a request-reply client; a `RequestResponder` declared
    before the service exists, passed as a subscription, answers through the service's
    producer; `hooks` are entered before the consumers start and the instance is announced,
    and exited after the consumers stop; what a hook yields is `runtime[KEY]` for routes
    (through `RuntimeDep`) and `ctx.runtime[KEY]` for handlers, beside the core parts."""
    topic = unique("pricing.requests")
    events = EventRegistry()
    events.register(GetQuote)
    events.register(Quote)
    responder = RequestResponder(events=events)
    seen: dict[str, Any] = {}

    @responder.responds(GetQuote)
    async def quote(request: GetQuote, ctx: MessageContext) -> Quote:
        seen["the responder's probe"] = ctx.runtime[PROBE]
        seen["the responder's database"] = ctx.runtime[DATABASE]
        return priced(request)

    @asynccontextmanager
    async def probe(runtime: ServiceRuntime) -> Any:
        seen["registered at entry"] = await runtime.registry.discover("sample")
        seen["consumers running at entry"] = any(
            c.running for c in runtime.bus.consumers.values())
        yield {"probe": "yielded"}
        seen["consumers running at exit"] = any(
            c.running for c in runtime.bus.consumers.values())
        seen["registered at exit"] = await runtime.registry.discover("sample")

    wrapped: list[str] = []

    def middleware(call: Any, name: str) -> Any:
        async def run(event: Any, ctx: MessageContext) -> None:
            wrapped.append(name)
            await call(event, ctx)

        return run

    calls = APIRouter()

    @calls.get("/quote")
    async def ask(runtime: RuntimeDep, km: float) -> dict[str, Any]:
        assert runtime.requests is not None
        reply = await runtime.requests.send_request(
            topic, GetQuote(data=QuoteQuery(distance_km=km)), timeout=15)
        return {"price_cents": reply.data.price_cents, **runtime[PROBE]}

    settings = Settings(environment="development", service_name="sample",
                        database_url=f"sqlite+aiosqlite:///{tmp_path / 'sample.db'}",
                        kafka_bootstrap_servers=kafka_config.bootstrap_servers,
                        kafka_consumer_group=unique("sample"))
    app = create_service("sample", metadata=Base.metadata, service_dir=SERVICE_DIR,
                         events=events, routers=[calls], settings=settings,
                         subscriptions=[Subscription(topic, responder)], requests=True,
                         hooks={PROBE: probe}, middleware=[middleware])
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        await eventually(lambda: runtime.registry.discover("sample"))
        database = runtime.database
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            answered = await http.get("/quote", params={"km": 2})
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"price_cents": 300, "probe": "yielded"}
    assert seen["registered at entry"] == [], "announced before the hooks ran"
    assert seen["consumers running at entry"] is False, "consumers started before the hooks"
    assert seen["consumers running at exit"] is False, "hooks exited under running consumers"
    assert seen["registered at exit"] == [], "hooks exited while still announced"
    assert seen["the responder's probe"] == {"probe": "yielded"}
    assert seen["the responder's database"] is database
    assert len(wrapped) == 1, "the service's middleware did not wrap the responder"


class OtherSettings(Settings):
    """Settings of some other service."""


@pytest.mark.parametrize("case", ["wrong type", "wrong settings"])
async def test_a_hook_of_the_wrong_type_or_settings_stops_the_start(
    tmp_path: Path, kafka_config: KafkaConfig, case: str
) -> None:
    """What a hook yields must be what its key says, and `settings_as` refuses settings of
    another class: both fail the start with a ConfigurationError naming the cause, before
    any consumer starts or the instance is announced."""

    @asynccontextmanager
    async def hook(runtime: ServiceRuntime) -> Any:
        if case == "wrong settings":
            runtime.settings_as(OtherSettings)
        yield ["not", "a", "dict"]

    settings = Settings(environment="development", service_name="sample",
                        database_url=f"sqlite+aiosqlite:///{tmp_path / 'sample.db'}",
                        kafka_bootstrap_servers=kafka_config.bootstrap_servers,
                        kafka_consumer_group=unique("sample"))
    app = create_service("sample", metadata=Base.metadata, service_dir=SERVICE_DIR,
                         settings=settings, hooks={PROBE: hook})
    with pytest.raises(ConfigurationError) as refused:
        async with app.router.lifespan_context(app):
            pass
    expected = ("cannot hold list" if case == "wrong type"
                else "runs with Settings, not OtherSettings")
    assert expected in str(refused.value)
