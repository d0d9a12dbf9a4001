"""Assembles the driver service: one `create_service` call and its hooks; nothing is built at
import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from core.app import ServiceRuntime, Subscription, create_service
from core.security import Security
from services.driver.config import DriverSettings
from services.driver.events import (
    COMMANDS_TOPIC,
    EVENTS_TOPIC,
    LOCATIONS_TOPIC,
    DriverLocationReported,
    DriverRegistered,
    DriverStatusChanged,
)
from services.driver.handlers import commands, events, handlers
from services.driver.models import Base
from services.driver.routers import router
from services.driver.stream import LOCATION_HUB, LocationHub
from services.driver.writer import LOCATION_WRITER, LocationWriter

SERVICE_DIR = Path(__file__).resolve().parent


def create_app(settings: DriverSettings | None = None, *,
               security: Security | None = None) -> FastAPI:
    return create_service(
        "driver", metadata=Base.metadata, service_dir=SERVICE_DIR, events=events,
        routers=[router], subscriptions=[Subscription(LOCATIONS_TOPIC, handlers),
                                         Subscription(COMMANDS_TOPIC, commands)],
        publishes={EVENTS_TOPIC: [DriverRegistered, DriverStatusChanged],
                   LOCATIONS_TOPIC: [DriverLocationReported]},
        settings=settings or DriverSettings(),
        security=security, hooks={LOCATION_WRITER: read_model, LOCATION_HUB: location_stream},
        description="Drivers, their latest locations, the nearby query and live locations.")


@asynccontextmanager
async def read_model(runtime: ServiceRuntime) -> AsyncIterator[LocationWriter]:
    yield LocationWriter(runtime.database)


@asynccontextmanager
async def location_stream(runtime: ServiceRuntime) -> AsyncIterator[LocationHub]:
    settings = runtime.settings_as(DriverSettings)
    hub = LocationHub(settings.kafka(), runtime.bus.serializer,
                      queue_size=settings.stream_queue_size)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
