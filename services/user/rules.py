"""Profile rules: who gets a profile, what an update changes, and the events both publish."""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import update

from core.bases import BaseRepository, BaseService, NotFoundError
from services.user.events import (
    USER_EVENTS,
    ContactData,
    ProfileCreated,
    ProfileCreatedData,
    ProfileUpdated,
    ProfileUpdatedData,
)
from services.user.models import DISPLAY_NAME_LENGTH, Profile
from services.user.schemas import Preferences, ProfileCreate, ProfileUpdate


class ProfileRepository(BaseRepository[Profile]):
    model = Profile
    filter_fields = frozenset({"email", "display_name", "phone", "created_at", "updated_at"})
    sort_fields = frozenset({"email", "display_name", "created_at", "updated_at"})
    default_sort = ("-created_at",)

    async def get_for_update(self, id: Any) -> Profile:
        """The live profile, locked until the transaction ends, so concurrent updates of one
        profile apply in turn and each merges into what the previous one wrote."""
        try:
            key = self._key(id)
        except ValueError:
            key = None
        if key is not None and self.session.get_bind().dialect.name == "sqlite":
            # No row locks, and the driver begins the transaction at its first write, not at
            # a read: writing first takes SQLite's one writer lock now, and the read below
            # then sees the last committed update.
            await self.session.execute(
                update(Profile).where(Profile.id == key)
                .values(updated_at=Profile.updated_at)  # changes nothing, not even the time
                .execution_options(synchronize_session=False))
        found = None if key is None else await self.session.get(
            Profile, key, with_for_update=True, populate_existing=True)
        if found is None or found.deleted_at is not None:
            raise NotFoundError(f"Profile {id} not found")
        return found


class ProfileService(BaseService[Profile, ProfileCreate, ProfileUpdate]):
    repository_class = ProfileRepository
    events_topic = USER_EVENTS

    @property
    def profiles(self) -> ProfileRepository:
        return cast(ProfileRepository, self.repository)

    async def register(self, user_id: str, email: str) -> Profile | None:
        """Create the profile of a user auth registered, and publish `user.profile_created`
        with it. None, and no event, when the user already has one, live or soft-deleted (a
        replayed or re-sent registration, a restored account): that profile is kept as is."""
        key = uuid.UUID(user_id)
        if await self.repository.get(key, include_deleted=True) is not None:
            return None
        return await self.create(ProfileCreate(
            id=key, email=email, display_name=default_display_name(email)))

    async def update(self, id: Any, data: ProfileUpdate) -> Profile:
        """Apply what differs from the stored profile and publish `user.profile_updated`
        naming it; an update that changes nothing publishes nothing."""
        profile = await self.profiles.get_for_update(id)
        changes = changed_values(profile, data)
        if changes:
            await self.repository.update(profile, changes)
            await self.publish_event(ProfileUpdated(
                aggregate_id=str(profile.id), data=ProfileUpdatedData(
                    user_id=str(profile.id), email=profile.email,
                    display_name=profile.display_name, phone=profile.phone,
                    avatar_url=profile.avatar_url, changed=sorted(changes))))
        return profile

    async def contact(self, user_id: str) -> ContactData:
        """How to reach `user_id`; `found=False` for an unknown or deleted user."""
        profile = await self.repository.get(user_id)
        if profile is None:
            return ContactData(user_id=user_id, found=False)
        return ContactData(user_id=user_id, found=True, email=profile.email,
                           display_name=profile.display_name, phone=profile.phone)

    async def _after_create(self, profile: Profile) -> None:
        await self.publish_event(ProfileCreated(
            aggregate_id=str(profile.id), data=ProfileCreatedData(
                user_id=str(profile.id), email=profile.email,
                display_name=profile.display_name, phone=profile.phone)))


def default_display_name(email: str) -> str:
    """The email's local part: what a new user is called until they choose a name."""
    local = " ".join(email.rpartition("@")[0].split()) or email.strip()
    return local[:DISPLAY_NAME_LENGTH] or "user"


def changed_values(profile: Profile, data: ProfileUpdate) -> dict[str, Any]:
    """The column values `data` changes on `profile`: the fields sent, preferences merged
    into the stored ones, minus those equal to what is stored."""
    sent = data.model_dump(mode="json", exclude_unset=True)
    if "preferences" in sent:
        merged = {**profile.preferences, **sent["preferences"]}
        sent["preferences"] = Preferences.model_validate(merged).model_dump(mode="json")
    return {name: value for name, value in sent.items() if getattr(profile, name) != value}
