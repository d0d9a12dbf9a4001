"""Assembles the order service: one `create_service` call and its hooks; nothing is built at
import."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from core.app import Subscription, create_service
from core.saga import SAGAS, saga_admin_router
from core.security import Security
from services.order.config import OrderSettings
from services.order.deps import ORDERS, order_store, ride_sagas
from services.order.events import (
    DRIVER_COMMANDS,
    ORDER_EVENT_TYPES,
    ORDER_EVENTS,
    SAGA_REPLIES,
    CompleteTrip,
    ReleaseDriver,
    ReserveDriver,
)
from services.order.handlers import events, handlers
from services.order.models import Base
from services.order.projections import history, trips
from services.order.routers import router

SERVICE_DIR = Path(__file__).resolve().parent


def create_app(settings: OrderSettings | None = None, *,
               security: Security | None = None) -> FastAPI:
    return create_service(
        "order", metadata=Base.metadata, service_dir=SERVICE_DIR, events=events,
        routers=[router, saga_admin_router()],
        subscriptions=[Subscription(SAGA_REPLIES, handlers)],
        publishes={ORDER_EVENTS: ORDER_EVENT_TYPES,
                   DRIVER_COMMANDS: [ReserveDriver, ReleaseDriver, CompleteTrip]},
        settings=settings or OrderSettings(),
        security=security, hooks={ORDERS: order_store, SAGAS: ride_sagas},
        projections=[history, trips],
        description="Ride orders (event-sourced), the ride saga, and the order read models.")
