"""The handlers on the in-memory bus with the real inbox (SQLite): exactly once per event,
no dead letter for a user who already has a profile, invalidation on every delivery."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.app import OUTBOX_WRITER
from core.cache import MemoryCache
from core.db import Database
from core.messaging import (
    DEFAULT_RETRY,
    H_ATTEMPTS,
    H_ERROR,
    DatabaseIdempotencyStore,
    InMemoryEventBus,
    OutboxWriter,
    Outcome,
)
from core.runtime import Runtime
from services.user.cache import CACHE, ProfileCache
from services.user.events import (
    AUTH_EVENTS,
    USER_EVENTS,
    ProfileUpdated,
    ProfileUpdatedData,
    UserRegistered,
    UserRegisteredData,
)
from services.user.handlers import events, invalidations, registrations
from services.user.models import Base, Profile, outbox
from services.user.schemas import ProfilePublic


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'user.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield database
    await database.dispose()


def bus_on(db: Database) -> InMemoryEventBus:
    bus = InMemoryEventBus(events, idempotency=DatabaseIdempotencyStore(db, Base.metadata),
                           retry=DEFAULT_RETRY)  # the consumers' policy, not the bus's own
    bus.runtime.add(OUTBOX_WRITER, OutboxWriter(Base.metadata, bus.serializer))
    bus.subscribe(AUTH_EVENTS, registrations)
    return bus


async def counts(db: Database) -> tuple[int, list[str]]:
    async with db.session() as session:
        profiles = await session.scalar(select(func.count()).select_from(Profile))
        types = list(await session.scalars(select(outbox.c.event_type)))
    return profiles or 0, types


def registration(user_id: str, email: str = "ada@example.com") -> UserRegistered:
    return UserRegistered(data=UserRegisteredData(user_id=user_id, email=email), key=user_id)


async def test_the_same_event_twice_makes_one_profile_and_one_outbox_row(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    bus = bus_on(db)
    event = registration(str(uuid.uuid4()))
    await bus.publish(AUTH_EVENTS, event)
    with caplog.at_level(logging.INFO, logger="services.user.handlers"):
        await bus.publish(AUTH_EVENTS, event)
    assert "already has a profile" not in caplog.text  # the inbox skipped it: no second run
    assert await counts(db) == (1, ["user.profile_created"])


async def test_a_user_with_a_profile_is_not_dead_lettered(db: Database) -> None:
    bus = bus_on(db)
    user_id = str(uuid.uuid4())
    await bus.publish(AUTH_EVENTS, registration(user_id))
    await bus.publish(AUTH_EVENTS, registration(user_id, "again@example.com"))  # new event id
    assert bus.dead_letters.records == [] and bus.processed[Outcome.HANDLED] == 2
    assert await counts(db) == (1, ["user.profile_created"])


async def test_a_registration_that_cannot_be_stored_leaves_nothing_behind(db: Database) -> None:
    bus = bus_on(db)
    await bus.publish(AUTH_EVENTS, registration("not-a-uuid"))
    [(_, headers)] = bus.dead_letters.records
    dead = dict(headers)
    assert b"not a UUID" in dead[H_ERROR] and dead[H_ATTEMPTS] == b"1"  # no retry can fix it
    assert await counts(db) == (0, [])


async def test_every_update_event_drops_the_cached_profile_each_time(db: Database) -> None:
    cache = ProfileCache(MemoryCache(), ttl=300)
    runtime = Runtime()
    runtime.add(CACHE, cache)
    bus = InMemoryEventBus(events, idempotency=DatabaseIdempotencyStore(db, Base.metadata),
                           runtime=runtime)
    bus.subscribe(USER_EVENTS, invalidations)
    user_id = str(uuid.uuid4())
    loads = 0

    async def load() -> ProfilePublic:
        nonlocal loads
        loads += 1
        return ProfilePublic.model_validate({
            "id": user_id, "email": "a@b.org", "display_name": f"v{loads}", "phone": None,
            "avatar_url": None, "preferences": {}, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z"})

    event = ProfileUpdated(aggregate_id=user_id, data=ProfileUpdatedData(
        user_id=user_id, email="a@b.org", display_name="x", phone=None, avatar_url=None,
        changed=["display_name"]))
    assert (await cache.get(user_id, load)).display_name == "v1"
    await bus.publish(USER_EVENTS, event)
    assert (await cache.get(user_id, load)).display_name == "v2"
    await bus.publish(USER_EVENTS, event)  # the same event again: not skipped by an inbox
    assert (await cache.get(user_id, load)).display_name == "v3"
