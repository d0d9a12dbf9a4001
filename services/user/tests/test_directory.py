"""`Profiles` (the routes' reads and writes) against a real SQLite database and the in-process
cache, with no consumer running: what the writer itself does for its next read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.bases import NotFoundError
from core.cache import MemoryCache
from core.db import Database
from services.user.cache import ProfileCache
from services.user.directory import Profiles
from services.user.models import Base
from services.user.rules import ProfileService
from services.user.schemas import ProfileUpdate
from services.user.tests.support import RecordingOutbox


@pytest.fixture
async def profiles(tmp_path: Path) -> AsyncIterator[Profiles]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'user.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield Profiles(database, RecordingOutbox(), ProfileCache(MemoryCache(), ttl=300))
    await database.dispose()


async def registered(profiles: Profiles) -> str:
    user_id = str(uuid.uuid4())
    async with profiles.database.transaction() as session:
        await ProfileService(session, profiles.outbox).register(user_id, "ada@example.com")
    return user_id


async def test_the_writers_next_read_is_fresh_without_waiting_for_the_event(
        profiles: Profiles) -> None:
    user_id = await registered(profiles)
    assert (await profiles.read(user_id)).display_name == "ada"  # cached now
    await profiles.update(user_id, ProfileUpdate(display_name="Ada"))
    assert (await profiles.read(user_id)).display_name == "Ada"
    assert (await profiles.read(user_id.upper())).display_name == "Ada"  # one key per user


async def test_reads_come_from_the_cache_until_it_is_invalidated(profiles: Profiles) -> None:
    user_id = await registered(profiles)
    await profiles.read(user_id)
    async with profiles.database.transaction() as session:  # a write that skips Profiles
        profile = await ProfileService(session).get(user_id)
        profile.display_name = "changed elsewhere"
    assert (await profiles.read(user_id)).display_name == "ada"
    await profiles.cache.invalidate(user_id)
    assert (await profiles.read(user_id)).display_name == "changed elsewhere"


async def test_unknown_and_malformed_ids_are_not_found_and_not_cached(
        profiles: Profiles) -> None:
    for user_id in (str(uuid.uuid4()), "not-a-uuid", ""):
        with pytest.raises(NotFoundError):
            await profiles.read(user_id)
    user_id = str(uuid.uuid4())
    with pytest.raises(NotFoundError):
        await profiles.read(user_id)
    async with profiles.database.transaction() as session:
        await ProfileService(session, profiles.outbox).register(user_id, "late@example.com")
    assert (await profiles.read(user_id)).email == "late@example.com"


async def test_a_failed_update_leaves_the_cached_profile(profiles: Profiles) -> None:
    user_id = await registered(profiles)
    with pytest.raises(NotFoundError):
        await profiles.update(str(uuid.uuid4()), ProfileUpdate(display_name="x"))
    assert (await profiles.read(user_id)).display_name == "ada"
