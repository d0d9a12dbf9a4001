"""The profile rules, on a real SQLite database and a recording outbox (no Kafka); and
`Profiles` (the routes' reads and writes) in front of them with the in-process cache, with no
consumer running: what the writer itself does for its next read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import func, select

from core.bases import NotFoundError
from core.cache import MemoryCache
from core.db import Database
from services.user.cache import ProfileCache
from services.user.directory import Profiles
from services.user.events import USER_EVENTS, ProfileCreated, ProfileUpdated
from services.user.models import Base, Profile
from services.user.rules import ProfileService, default_display_name
from services.user.schemas import ProfileUpdate, normalize_phone
from services.user.tests.conftest import RecordingOutbox


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'user.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield database
    await database.dispose()


async def register(db: Database, outbox: RecordingOutbox, user_id: str,
                   email: str = "ada.lovelace@example.com") -> Profile | None:
    async with db.transaction() as session:
        return await ProfileService(session, outbox).register(user_id, email)


async def update(db: Database, outbox: RecordingOutbox, user_id: str, **fields: Any) -> Profile:
    async with db.transaction() as session:
        return await ProfileService(session, outbox).update(
            user_id, ProfileUpdate.model_validate(fields))


async def test_a_registration_makes_a_profile_named_after_the_email_and_one_event(
        db: Database) -> None:
    outbox, user_id = RecordingOutbox(), str(uuid.uuid4())
    profile = await register(db, outbox, user_id)
    assert profile is not None and str(profile.id) == user_id
    assert profile.display_name == "ada.lovelace" and profile.phone is None
    assert profile.preferences == {"language": "en", "marketing_opt_in": False,
                                   "notification_channels": ["email"]}
    [(topic, event)] = outbox.events
    assert topic == USER_EVENTS and isinstance(event, ProfileCreated)
    assert event.aggregate_id == user_id and event.data.display_name == "ada.lovelace"


async def test_a_second_registration_of_the_same_user_changes_nothing(db: Database) -> None:
    outbox, user_id = RecordingOutbox(), str(uuid.uuid4())
    await register(db, outbox, user_id)
    await update(db, outbox, user_id, display_name="Ada")
    assert await register(db, outbox, user_id, "other@example.com") is None
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Profile)) == 1
        assert (await ProfileService(session).get(user_id)).display_name == "Ada"
    assert [type(e) for _, e in outbox.events] == [ProfileCreated, ProfileUpdated]


async def test_a_soft_deleted_profile_is_not_recreated_by_a_registration(db: Database) -> None:
    outbox, user_id = RecordingOutbox(), str(uuid.uuid4())
    await register(db, outbox, user_id)
    async with db.transaction() as session:
        await ProfileService(session, outbox).delete(user_id)
    assert await register(db, outbox, user_id) is None
    async with db.session() as session:
        with pytest.raises(NotFoundError):
            await ProfileService(session).get(user_id)
        assert not (await ProfileService(session).contact(user_id)).found


async def test_an_update_publishes_what_changed_and_merges_preferences(db: Database) -> None:
    outbox, user_id = RecordingOutbox(), str(uuid.uuid4())
    await register(db, outbox, user_id)
    profile = await update(db, outbox, user_id, display_name="Ada", phone="+44 (20) 7946-0958",
                           preferences={"marketing_opt_in": True,
                                        "notification_channels": ["sms", "email", "sms"]})
    assert profile.phone == "+442079460958"
    assert profile.preferences["marketing_opt_in"] is True
    assert profile.preferences["language"] == "en"  # kept: not sent
    assert profile.preferences["notification_channels"] == ["sms", "email"]
    event = outbox.events[-1][1]
    assert isinstance(event, ProfileUpdated)
    assert event.data.changed == ["display_name", "phone", "preferences"]
    assert event.data.phone == "+442079460958" and event.aggregate_id == user_id


async def test_an_update_that_changes_nothing_publishes_nothing(db: Database) -> None:
    outbox, user_id = RecordingOutbox(), str(uuid.uuid4())
    await register(db, outbox, user_id)
    await update(db, outbox, user_id, display_name="ada.lovelace",
                 preferences={"language": "en"})
    assert len(outbox.events) == 1
    await update(db, outbox, user_id, avatar_url="https://cdn.example.com/a.png")
    await update(db, outbox, user_id, avatar_url=None)
    assert [e.data.changed for _, e in outbox.events[1:]] == [["avatar_url"], ["avatar_url"]]


async def test_an_unknown_user_cannot_be_updated_and_has_no_contact(db: Database) -> None:
    outbox = RecordingOutbox()
    with pytest.raises(NotFoundError):
        await update(db, outbox, str(uuid.uuid4()), display_name="Nobody")
    async with db.session() as session:
        service = ProfileService(session)
        assert (await service.contact(str(uuid.uuid4()))).found is False
        assert (await service.contact("not-a-uuid")).found is False
    assert outbox.events == []


async def test_contact_answers_the_stored_profile(db: Database) -> None:
    outbox, user_id = RecordingOutbox(), str(uuid.uuid4())
    await register(db, outbox, user_id, "grace@example.com")
    await update(db, outbox, user_id, phone="0044 20 7946 0958")
    async with db.session() as session:
        contact = await ProfileService(session).contact(user_id)
    assert contact.model_dump() == {"user_id": user_id, "found": True,
                                    "email": "grace@example.com", "display_name": "grace",
                                    "phone": "+442079460958"}


@pytest.mark.parametrize(("typed", "stored"), [
    ("+44 20 7946 0958", "+442079460958"), ("+1 (555) 123-4567", "+15551234567"),
    ("0049.30.123456", "+4930123456")])
def test_phone_numbers_are_stored_as_e164(typed: str, stored: str) -> None:
    assert normalize_phone(typed) == stored


@pytest.mark.parametrize("bad", ["020 7946 0958", "+0 123 4567", "+12", "+1234567890123456",
                                 "+44 20 7946 095x", "", "++441234567"])
def test_phone_numbers_that_are_not_international_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="international"):
        normalize_phone(bad)


@pytest.mark.parametrize("body", [
    {"display_name": None}, {"preferences": None}, {"display_name": "   "},
    {"display_name": "x" * 101}, {"avatar_url": "ftp://example.com/a.png"},
    {"avatar_url": "javascript:alert(1)"}, {"email": "new@example.com"},
    {"preferences": {"language": "english"}}, {"preferences": {"theme": "dark"}},
    {"preferences": {"notification_channels": ["pigeon"]}}, {"preferences": {"language": None}},
    {"phone": "12345"}])
def test_updates_that_break_a_rule_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(PydanticValidationError):
        ProfileUpdate.model_validate(body)


def test_updates_may_clear_phone_and_avatar_and_tidy_names() -> None:
    update = ProfileUpdate.model_validate({"phone": None, "avatar_url": None})
    assert update.model_fields_set == {"phone", "avatar_url"}
    named = ProfileUpdate.model_validate({"display_name": "  Ada \t Lovelace "})
    assert named.display_name == "Ada Lovelace"


@pytest.mark.parametrize(("email", "name"), [
    ("ada@example.com", "ada"), ("first.last+tag@example.com", "first.last+tag"),
    ("no-at-sign", "no-at-sign"), ("@example.com", "@example.com"),
    (f"{'x' * 150}@example.com", "x" * 100)])
def test_the_default_display_name_is_the_local_part(email: str, name: str) -> None:
    assert default_display_name(email) == name


# --- Profiles: the routes' reads and writes, through the cache ------------------------------


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
