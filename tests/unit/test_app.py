"""`create_service` checks what it can before anything starts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import MetaData

from core.app import RuntimeDep, Subscription, create_service
from core.bases import ConfigurationError
from core.db.models import service_metadata
from core.messaging.handlers import HandlerRegistry
from core.messaging.inbox import inbox_table
from core.messaging.outbox import lease_table, outbox_table
from core.messaging.serialization import EventRegistry
from tests.helpers import OrderPlaced, order_registry


async def noop(event: object) -> None: ...


def test_a_service_without_outbox_tables_is_refused_at_build_time(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="outbox, outbox_lease"):
        create_service("bare", metadata=MetaData(), service_dir=tmp_path)


async def test_a_service_does_not_redirect_a_trailing_slash(tmp_path: Path) -> None:
    """Starlette's redirect is absolute, on the Host it was sent: behind the gateway, the
    instance's own address (`307 Location: http://127.0.0.1:9101/auth/login`)."""
    metadata = MetaData()
    outbox_table(metadata)
    lease_table(metadata)
    router = APIRouter()

    @router.post("/auth/login")
    async def login() -> dict[str, str]:
        return {}

    app = create_service("slashes", metadata=metadata, service_dir=tmp_path, routers=[router])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1:9101") as http:
        assert (await http.post("/auth/login")).status_code == 200
        slashed = await http.post("/auth/login/")
    assert slashed.status_code == 404 and "location" not in slashed.headers


def test_a_subscribing_service_needs_an_inbox(tmp_path: Path) -> None:
    metadata = MetaData()
    outbox_table(metadata)
    lease_table(metadata)
    create_service("publisher", metadata=metadata, service_dir=tmp_path)  # publishing only: fine
    with pytest.raises(ConfigurationError, match="inbox"):
        create_service("consumer", metadata=metadata, service_dir=tmp_path,
                       subscriptions=[Subscription("orders", noop)])
    inbox_table(metadata)
    app = create_service("consumer", metadata=metadata, service_dir=tmp_path,
                         subscriptions=[Subscription("orders", noop)])
    assert app.title == "consumer"


def test_handled_events_must_be_in_the_service_registry(tmp_path: Path) -> None:
    metadata = MetaData()
    for declare in (outbox_table, lease_table, inbox_table):
        declare(metadata)
    handlers = HandlerRegistry()
    handlers.add(OrderPlaced, noop)
    subscribed = [Subscription("orders", handlers)]
    # Alone, the handler registry's own events are the service's.
    create_service("one", metadata=metadata, service_dir=tmp_path, subscriptions=subscribed)
    with pytest.raises(ConfigurationError, match=r"order.placed v2"):
        create_service("two", metadata=metadata, service_dir=tmp_path,
                       events=EventRegistry(), subscriptions=subscribed)
    create_service("three", metadata=metadata, service_dir=tmp_path,
                   events=order_registry(), subscriptions=subscribed)


def test_a_service_in_its_own_schema_finds_its_tables(tmp_path: Path) -> None:
    """Tables of `service_metadata(schema=...)` are keyed `schema.name`; declaring them again
    (models, then the inbox store, the relay...) must return them, not define them twice."""
    metadata = service_metadata(schema="drivers")
    tables = [declare(metadata) for declare in (outbox_table, lease_table, inbox_table)]
    assert [t.fullname for t in tables] == ["drivers.outbox", "drivers.outbox_lease",
                                            "drivers.inbox"]
    assert [declare(metadata) for declare in (outbox_table, lease_table, inbox_table)] == tables
    create_service("drivers", metadata=metadata, service_dir=tmp_path,
                   subscriptions=[Subscription("trips", noop)])


def test_topic_names_kafka_would_refuse_are_refused_at_build_time(tmp_path: Path) -> None:
    metadata = MetaData()
    outbox_table(metadata)
    lease_table(metadata)
    with pytest.raises(ConfigurationError, match=r"invalid topic names \['driver events'\]"):
        create_service("drivers", metadata=metadata, service_dir=tmp_path,
                       publishes=["driver.events", "driver events"])
    create_service("drivers", metadata=metadata, service_dir=tmp_path,
                   publishes=["driver.events", "driver.events.dlq"])


async def test_runtime_dep_in_an_app_not_built_by_create_service_says_so() -> None:
    app = FastAPI()

    @app.get("/x")
    async def x(runtime: RuntimeDep) -> str:
        return type(runtime).__name__

    with pytest.raises(ConfigurationError, match="the app has no runtime: build it with "
                                                  "create_service"):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://svc") as client:
            await client.get("/x")
