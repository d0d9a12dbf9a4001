"""Assembles the sample service's app, the way create_service will."""

from __future__ import annotations

from fastapi import FastAPI, Request

from core.bases import BaseRouter, ForbiddenError, Permissions, install_exception_handlers
from core.bases.deps import attach
from core.bases.types import EventOutbox
from core.db.engine import Database
from tests.sample_service.schemas import WidgetCreate, WidgetPublic, WidgetUpdate
from tests.sample_service.service import WidgetService

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
