"""Assembles the driver service: one `create_service` call, its hooks, nothing built at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from core.app import ServiceRuntime, Subscription, create_service
from core.security import Security
from services.driver.config import DriverSettings
from services.driver.events import EVENTS_TOPIC, LOCATIONS_TOPIC, driver_events
from services.driver.handlers import location_handlers
from services.driver.models import Base
from services.driver.routers import STREAM_HOOK, WRITER_HOOK, router
from services.driver.stream import LocationHub
from services.driver.writer import LocationWriter

SERVICE_DIR = Path(__file__).resolve().parent


def create_app(settings: DriverSettings | None = None, *,
               security: Security | None = None) -> FastAPI:
    cfg = settings or DriverSettings()
    events = driver_events()
    writer = LocationWriter()

    @asynccontextmanager
    async def read_model(runtime: ServiceRuntime) -> AsyncIterator[LocationWriter]:
        writer.attach(runtime.database)
        yield writer

    @asynccontextmanager
    async def location_stream(runtime: ServiceRuntime) -> AsyncIterator[LocationHub]:
        hub = LocationHub(runtime.settings.kafka(), runtime.bus.serializer,
                          queue_size=cfg.stream_queue_size)
        await hub.start()
        try:
            yield hub
        finally:
            await hub.stop()

    return create_service(
        "driver", metadata=Base.metadata, service_dir=SERVICE_DIR, events=events,
        routers=[router],
        subscriptions=[Subscription(LOCATIONS_TOPIC, location_handlers(events, writer))],
        publishes=[EVENTS_TOPIC, LOCATIONS_TOPIC], settings=cfg, security=security,
        hooks={WRITER_HOOK: read_model, STREAM_HOOK: location_stream},
        description="Drivers, their latest locations, the nearby query and live locations.")
