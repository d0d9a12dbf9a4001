"""Assembles the user service: one `create_service` call, with the per-app parts its
handlers and routes share (the profile cache, the handlers' outbox writer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from core.app import ServiceRuntime, Subscription, create_service
from core.cache import cache_backend
from core.db.engine import Database
from core.messaging.outbox import OutboxWriter
from core.messaging.serialization import EventRegistry, EventSerializer
from core.security import Security
from services.user.cache import ProfileCache
from services.user.config import UserSettings
from services.user.directory import CACHE_HOOK
from services.user.events import AUTH_EVENTS, USER_EVENTS, USER_REQUESTS
from services.user.handlers import (
    Deferred,
    contact_responder,
    invalidation_handlers,
    registration_handlers,
)
from services.user.models import Base
from services.user.routers import me, users

SERVICE_DIR = Path(__file__).resolve().parent


def create_app(settings: UserSettings | None = None, *,
               security: Security | None = None) -> FastAPI:
    """The user service's app; nothing runs until its lifespan starts."""
    cfg = settings or UserSettings()
    events = EventRegistry()
    cache = ProfileCache(cache_backend(cfg), ttl=cfg.profile_cache_ttl)
    # The handlers' own writer (they are built before the runtime's): same table, same
    # serializer settings; the start-up hook makes its commits wake the relay too.
    outbox = OutboxWriter(Base.metadata, EventSerializer(events, service_name=cfg.service_name))
    database: Deferred[Database] = Deferred()

    @asynccontextmanager
    async def profiles(runtime: ServiceRuntime) -> AsyncIterator[ProfileCache]:
        outbox.on_commit(runtime.relay.notify)
        database.set(runtime.database)
        try:
            yield cache
        finally:
            await cache.close()

    return create_service(
        "user", metadata=Base.metadata, service_dir=SERVICE_DIR, events=events,
        routers=[me, users],
        subscriptions=[
            Subscription(AUTH_EVENTS, registration_handlers(events, outbox)),
            Subscription(USER_EVENTS, invalidation_handlers(events, cache),
                         group_id=invalidation_group(cfg)),
            Subscription(USER_REQUESTS, contact_responder(events, database)),
        ],
        publishes=[USER_EVENTS], settings=cfg, security=security,
        hooks={CACHE_HOOK: profiles})


def invalidation_group(settings: UserSettings) -> str | None:
    """Who must see each `user.profile_updated` to invalidate it. With Redis, one instance
    of the service does it for all (the cache is shared), so the service's own group serves
    (None), with no second group to run and watch. With in-process caches, every instance
    must: each has a group of its own (a new instance replays the topic once, deleting keys it
    does not have)."""
    if settings.redis_url:
        return None
    return f"{settings.kafka().consumer_group}.cache.{settings.instance_id}"
