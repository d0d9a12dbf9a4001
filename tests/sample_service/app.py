"""Assembles the sample service's app: `service()` the way a real service runs (through
`create_service`), `create_app()` bare, for tests that hand it a database of their own."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request

from core.app import Subscription, create_service
from core.bases import (
    BaseRouter,
    ForbiddenError,
    Permissions,
    error_responses,
    install_exception_handlers,
)
from core.bases.deps import attach
from core.bases.types import EventOutbox
from core.config import Settings
from core.db.engine import Database
from core.http import ServicesDep
from core.messaging.handlers import HandlerRegistry
from core.messaging.types import MessageContext
from core.security import CurrentPrincipal
from tests.sample_service.events import WidgetCreated, WidgetDeleted
from tests.sample_service.models import Base
from tests.sample_service.schemas import WidgetCreate, WidgetPublic, WidgetUpdate
from tests.sample_service.service import WidgetService

log = logging.getLogger(__name__)

SERVICE_DIR = Path(__file__).resolve().parent
AUDIT_HANDLER = "sample.audit"

ROLE_HEADER = "x-role"


def admins_only(request: Request) -> None:
    """Stand-in for a JWT role check until core.security lands."""
    if request.headers.get(ROLE_HEADER) != "admin":
        raise ForbiddenError("admins only")


router = BaseRouter(
    WidgetService,
    prefix="/widgets",
    tags=["widgets"],
    create_schema=WidgetCreate,
    update_schema=WidgetUpdate,
    public_schema=WidgetPublic,
    permissions=Permissions(restore=[admins_only], hard_delete=[admins_only]),
    hard_delete=True,
)


def create_app(database: Database, outbox: EventOutbox | None = None) -> FastAPI:
    app = FastAPI(title="sample")
    install_exception_handlers(app)
    attach(app, database, outbox)
    app.include_router(router)
    return app


handlers = HandlerRegistry()
handlers.events.register(WidgetDeleted)


@handlers.handles(WidgetCreated, name=AUDIT_HANDLER)
async def audit(event: WidgetCreated, ctx: MessageContext) -> None:
    """Its effect is its inbox row, written in `ctx.session`: proof the consumer ran it once;
    its line is a handler's line for the tests of `core.logs`."""
    log.info("audited widget %s", event.aggregate_id)


calls = APIRouter(tags=["calls"])


@calls.get("/whoami")
async def whoami(principal: CurrentPrincipal) -> dict[str, Any]:
    """Who the verified token says the caller is (401 without a valid one)."""
    return {"subject": principal.subject, "permissions": sorted(principal.permissions)}


@calls.get("/relay/{service_name}", responses=error_responses(502, 503, 504))
async def relay(service_name: Literal["echo"], principal: CurrentPrincipal,
                services: ServicesDep) -> Any:
    """Calls `service_name`'s /echo on the caller's behalf: what the other service received."""
    return (await services.get(service_name, "/echo")).json()


def service(settings: Settings | None = None, *, secured: bool = False) -> FastAPI:
    """The sample service; `secured` adds the routes that need a verified token (the
    environment must then say where the keys are: JWKS_URL)."""
    return create_service(
        "sample", metadata=Base.metadata, service_dir=SERVICE_DIR, events=handlers.events,
        routers=[router, calls] if secured else [router],
        subscriptions=[Subscription(WidgetService.events_topic, handlers)],
        publishes=[WidgetService.events_topic], settings=settings)
