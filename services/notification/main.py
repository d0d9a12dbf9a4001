"""Assembles the notification service: one `create_service` call, built when asked for
(`create_app`), nothing at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from core.app import Hook, ServiceRuntime, Subscription, create_service
from core.messaging.serialization import EventRegistry
from core.security import Security
from services.notification.config import NotificationSettings
from services.notification.contacts import ContactDirectory
from services.notification.delivery import DeliveryPolicy, DeliveryWorker
from services.notification.events import (
    AUTH_EVENTS,
    DRIVER_EVENTS,
    NOTIFICATION_EVENTS,
    USER_EVENTS,
    USER_REQUESTS,
    UserContact,
)
from services.notification.handlers import Parts, Wiring, build_handlers
from services.notification.models import Base
from services.notification.routers import router
from services.notification.senders import NotificationSender, sender_from_settings

SERVICE_DIR = Path(__file__).resolve().parent


def create_app(settings: NotificationSettings | None = None, *,
               security: Security | None = None) -> FastAPI:
    cfg = settings or NotificationSettings()
    events = EventRegistry()
    events.register(UserContact)  # the reply the request-reply client decodes
    wiring = Wiring()
    return create_service(
        cfg.service_name, metadata=Base.metadata, service_dir=SERVICE_DIR, events=events,
        routers=[router],
        subscriptions=[Subscription((AUTH_EVENTS, USER_EVENTS, DRIVER_EVENTS),
                                    build_handlers(wiring, events))],
        publishes=[NOTIFICATION_EVENTS, USER_REQUESTS], settings=cfg, security=security,
        requests=True, hooks={"delivery": delivery_hook(cfg, sender_from_settings(cfg), wiring)},
        description="Notifications for users, made from the other services' events.")


def delivery_hook(settings: NotificationSettings, sender: NotificationSender,
                  wiring: Wiring) -> Hook:
    """Starts the delivery task and hands the handlers their parts; stops the task first at
    shutdown (its unfinished sends keep their claims and go again after the lease)."""

    @asynccontextmanager
    async def hook(runtime: ServiceRuntime) -> AsyncIterator[DeliveryWorker]:
        worker = DeliveryWorker(runtime.database, sender, DeliveryPolicy.from_settings(settings))
        await worker.start()
        wiring.attach(Parts(outbox=runtime.outbox,
                            directory=ContactDirectory(runtime.requests, settings.contact_timeout),
                            wake=worker.wake))
        try:
            yield worker
        finally:
            await worker.stop()

    return hook
