"""`Profiles`: what the routes do with profiles, reads through the cache and writes that
invalidate it once committed (see services.user.cache for why both)."""

from __future__ import annotations

import uuid

from core.bases import EventOutbox, NotFoundError
from core.db import Database
from services.user.cache import ProfileCache
from services.user.rules import ProfileService
from services.user.schemas import ProfilePublic, ProfileUpdate


class Profiles:
    """Profile reads and writes of one request."""

    def __init__(self, database: Database, outbox: EventOutbox, cache: ProfileCache) -> None:
        self.database = database
        self.outbox = outbox
        self.cache = cache

    async def read(self, user_id: str) -> ProfilePublic:
        """The live profile of `user_id`, or NotFoundError."""
        key = _canonical(user_id)

        async def load() -> ProfilePublic:
            async with self.database.reads() as session:  # no BEGIN/COMMIT: one statement
                profile = await ProfileService(session).get(key)
                return ProfilePublic.model_validate(profile, from_attributes=True)

        return await self.cache.get(key, load)

    async def update(self, user_id: str, data: ProfileUpdate) -> ProfilePublic:
        """Update in one transaction (state and event), then drop the cached copy: the
        transaction is this method's own, so the invalidation follows the commit."""
        key = _canonical(user_id)
        async with self.database.transaction() as session:
            profile = await ProfileService(session, self.outbox).update(key, data)
            public = ProfilePublic.model_validate(profile, from_attributes=True)
        await self.cache.invalidate_after_write(key)
        return public


def _canonical(user_id: str) -> str:
    """One cache key per user, however the id was spelt; an id that is not a UUID names no
    profile."""
    try:
        return str(uuid.UUID(user_id))
    except ValueError:
        raise NotFoundError(f"Profile {user_id} not found") from None
