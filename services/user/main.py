"""Assembles the user service: one `create_service` call and its hook (the profile cache);
nothing is built at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from core.app import ServiceRuntime, Subscription, create_service
from core.cache import cache_backend
from core.security import Security
from services.user.cache import CACHE, ProfileCache
from services.user.config import UserSettings
from services.user.events import (
    AUTH_EVENTS,
    USER_EVENTS,
    USER_REQUESTS,
    ProfileCreated,
    ProfileUpdated,
)
from services.user.handlers import contacts, events, invalidations, registrations
from services.user.models import Base
from services.user.routers import me, users

SERVICE_DIR = Path(__file__).resolve().parent


def create_app(settings: UserSettings | None = None, *,
               security: Security | None = None) -> FastAPI:
    """The user service's app; nothing runs until its lifespan starts."""
    cfg = settings or UserSettings()
    return create_service(
        "user", metadata=Base.metadata, service_dir=SERVICE_DIR, events=events,
        routers=[me, users],
        subscriptions=[
            Subscription(AUTH_EVENTS, registrations),
            Subscription(USER_EVENTS, invalidations, group_id=invalidation_group(cfg)),
            Subscription(USER_REQUESTS, contacts),
        ],
        publishes={USER_EVENTS: [ProfileCreated, ProfileUpdated]}, settings=cfg,
        security=security, hooks={CACHE: profiles})


@asynccontextmanager
async def profiles(runtime: ServiceRuntime) -> AsyncIterator[ProfileCache]:
    settings = runtime.settings_as(UserSettings)
    cache = ProfileCache(cache_backend(settings), ttl=settings.profile_cache_ttl)
    try:
        yield cache
    finally:
        await cache.close()


def invalidation_group(settings: UserSettings) -> str | None:
    """Who must see each `user.profile_updated` to invalidate it. With Redis, one instance
    of the service does it for all (the cache is shared), so the service's own group serves
    (None), with no second group to run and watch. With in-process caches, every instance
    must: each has a group of its own (a new instance replays the topic once, deleting keys it
    does not have)."""
    if settings.redis_url:
        return None
    return f"{settings.kafka().consumer_group}.cache.{settings.instance_id}"
