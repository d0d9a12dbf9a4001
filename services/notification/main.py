"""Assembles the notification service: one `create_service` call and its hooks (the contact
directory, the delivery task); nothing is built at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from core.app import ServiceRuntime, Subscription, create_service
from core.asyncapi import Request
from core.security import Security
from services.notification.config import NotificationSettings
from services.notification.contacts import DIRECTORY, ContactDirectory
from services.notification.delivery import DELIVERY, DeliveryPolicy, DeliveryWorker
from services.notification.events import (
    AUTH_EVENTS,
    DRIVER_EVENTS,
    NOTIFICATION_EVENTS,
    USER_EVENTS,
    USER_REQUESTS,
    GetContact,
    NotificationCreated,
    UserContact,
)
from services.notification.handlers import events, handlers
from services.notification.models import Base
from services.notification.routers import router
from services.notification.senders import sender_from_settings

SERVICE_DIR = Path(__file__).resolve().parent


def create_app(settings: NotificationSettings | None = None, *,
               security: Security | None = None) -> FastAPI:
    cfg = settings or NotificationSettings()
    return create_service(
        cfg.service_name, metadata=Base.metadata, service_dir=SERVICE_DIR, events=events,
        routers=[router],
        subscriptions=[Subscription((AUTH_EVENTS, USER_EVENTS, DRIVER_EVENTS), handlers)],
        publishes={NOTIFICATION_EVENTS: [NotificationCreated],
                   USER_REQUESTS: [Request(GetContact, UserContact)]},
        settings=cfg, security=security,
        requests=True, hooks={DIRECTORY: directory, DELIVERY: delivery},
        description="Notifications for users, made from the other services' events.")


@asynccontextmanager
async def directory(runtime: ServiceRuntime) -> AsyncIterator[ContactDirectory]:
    yield ContactDirectory(runtime.requests,
                           runtime.settings_as(NotificationSettings).contact_timeout)


@asynccontextmanager
async def delivery(runtime: ServiceRuntime) -> AsyncIterator[DeliveryWorker]:
    """The delivery task: stopped after the consumers at shutdown (its unfinished sends keep
    their claims and go again after the lease)."""
    settings = runtime.settings_as(NotificationSettings)
    worker = DeliveryWorker(runtime.database, sender_from_settings(settings),
                            DeliveryPolicy.from_settings(settings))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()

