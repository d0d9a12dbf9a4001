"""`BaseRouter` against a bare FastAPI app on raw asyncpg, for `python -m bench.crud --postgres`.

- router: a minimal `core` app, one resource mounted with `BaseRouter` (a `BaseService` whose
  `_after_create` publishes `WidgetCreated` through the outbox), the exception handlers, the
  Database and OutboxWriter attached as `create_service` attaches them; no relay (its rows stay
  pending), no token, no request-id middleware: what is measured is BaseRouter's path.
- bare: FastAPI on an asyncpg pool (as large as SQLAlchemy's default: 5, overflow 10), no
  SQLAlchemy, no `core`: POST inserts the widget and its outbox row in one transaction, GET
  selects the live row. Both parse the body with a pydantic model, both build the same event
  with pydantic and answer the same envelope.

`POST /widgets` is a create (a state row and an outbox event); `GET /widgets/{id}` reads one
of the widgets created before the run (`seed`).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel
from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.crud.load import Endpoint
from core.bases import BaseRepository, BaseRouter, BaseService
from core.db.models import ServiceBase, SoftDeleteMixin, TimestampMixin, UUIDPrimaryKeyMixin
from core.db.types import uuid7
from core.messaging.events import IntegrationEvent
from core.messaging.outbox import lease_table, outbox_table

TOPIC = "widget.events"
BASELINE = "bare asyncpg"


class Base(ServiceBase, DeclarativeBase):
    pass


class Widget(UUIDPrimaryKeyMixin, TimestampMixin, SoftDeleteMixin, Base):
    __tablename__ = "widgets"

    name: Mapped[str] = mapped_column(String(100))
    price_cents: Mapped[int] = mapped_column(Integer)


outbox_table(Base.metadata)
lease_table(Base.metadata)


class WidgetCreate(BaseModel):
    name: str
    price_cents: int


class WidgetUpdate(BaseModel):
    name: str | None = None
    price_cents: int | None = None


class WidgetPublic(BaseModel):
    id: uuid.UUID
    name: str
    price_cents: int
    created_at: datetime
    updated_at: datetime


class WidgetData(BaseModel):
    widget_id: str
    name: str
    price_cents: int


class WidgetCreated(IntegrationEvent[WidgetData]):
    EVENT_TYPE = "widget.created"


class WidgetRepository(BaseRepository[Widget]):
    model = Widget


class WidgetService(BaseService[Widget, WidgetCreate, WidgetUpdate]):
    repository_class = WidgetRepository
    events_topic = TOPIC

    async def _after_create(self, widget: Widget) -> None:
        await self.publish_event(WidgetCreated(
            aggregate_id=str(widget.id), data=WidgetData(
                widget_id=str(widget.id), name=widget.name, price_cents=widget.price_cents)))


def router_app(database_url: str) -> Any:
    from fastapi import FastAPI

    from core.bases import install_exception_handlers
    from core.bases.deps import attach
    from core.db.engine import Database
    from core.messaging.outbox import OutboxWriter
    from core.messaging.serialization import EventRegistry, EventSerializer

    events = EventRegistry()
    events.register(WidgetCreated)
    app = FastAPI()
    install_exception_handlers(app)
    app.include_router(BaseRouter(
        WidgetService, prefix="/widgets", routes={"create", "read"}, create_schema=WidgetCreate,
        update_schema=WidgetUpdate, public_schema=WidgetPublic))
    attach(app, Database(database_url),
           OutboxWriter(Base.metadata, EventSerializer(events, service_name="bench")))
    return app


BARE_INSERT = ("INSERT INTO widgets (id, name, price_cents, created_at, updated_at) "
               "VALUES ($1, $2, $3, $4, $4)")
BARE_OUTBOX = ("INSERT INTO outbox (event_id, topic, key, event_type, payload, headers, "
               "created_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, 0)")
BARE_SELECT = ("SELECT id, name, price_cents, created_at, updated_at FROM widgets "
               "WHERE id = $1 AND deleted_at IS NULL")


def bare_app(dsn: str) -> Any:
    """The same work on raw asyncpg: no SQLAlchemy, no `core`."""
    from contextlib import asynccontextmanager

    import asyncpg  # type: ignore[import-untyped]
    from fastapi import FastAPI, HTTPException

    pool: Any = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        nonlocal pool
        pool = await asyncpg.create_pool(dsn, min_size=5, max_size=15)
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/widgets", status_code=201)
    async def create(body: WidgetCreate) -> dict[str, Any]:
        widget_id, now = uuid7(), datetime.now(UTC)
        event = WidgetCreated(aggregate_id=str(widget_id), service_name="bench", data=WidgetData(
            widget_id=str(widget_id), name=body.name, price_cents=body.price_cents))
        headers = json.dumps([["event_type", event.EVENT_TYPE], ["event_version", "1"],
                              ["event_id", str(event.event_id)],
                              ["content-type", "application/json"]])
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(BARE_INSERT, widget_id, body.name, body.price_cents, now)
            await conn.execute(BARE_OUTBOX, str(event.event_id), TOPIC, None, event.EVENT_TYPE,
                               event.__pydantic_serializer__.to_json(event), headers, now)
        return {"data": {"id": str(widget_id), "name": body.name,
                         "price_cents": body.price_cents, "created_at": now, "updated_at": now},
                "message": "Widget created"}

    @app.get("/widgets/{widget_id}")
    async def read(widget_id: uuid.UUID) -> dict[str, Any]:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(BARE_SELECT, widget_id)
        if row is None:
            raise HTTPException(404)
        return {"data": {**dict(row), "id": str(row["id"])}, "message": None}

    return app


async def create_tables(database_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    await engine.dispose()


ENDPOINTS = {
    "POST create": Endpoint("POST", "/widgets", """string.format("""
                            """'{"name":"widget %d","price_cents":%d}', n, n % 100000)"""),
    "GET read": Endpoint("GET", "/widgets/{id}"),
}


async def seed(url: str, count: int) -> list[str]:
    """`count` widgets created through the router before the run, for the reads."""
    import asyncio

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        async def one(n: int) -> str:
            response = await client.post("/widgets", json={"name": f"seed {n}",
                                                           "price_cents": n})
            assert response.status_code == 201, response.text
            return str(response.json()["data"]["id"])

        ids: list[str] = []
        for start in range(0, count, 16):
            ids += await asyncio.gather(*(one(n) for n in range(start, min(count, start + 16))))
    return ids
