"""Profiles cached by user id (`core.cache`): Redis when REDIS_URL is set, in-process else.

Two invalidations keep a cached profile fresh, and each covers what the other cannot:

- directly, by the writer, once its transaction has committed: the writer's own next read
  (a client that PATCHes then GETs) is fresh without waiting for Kafka;
- on every `user.profile_updated`, by this service's consumer of its own `user.events`: a
  reader that loaded the old row before the commit can store it after the writer's
  invalidation, and only a later invalidation removes it; the event comes after the commit,
  so it is that later one. It also retries (the consumer's retries) when Redis was away for
  the direct one, and reaches every instance's in-process cache, where the direct one only
  reaches the writer's.

The TTL bounds whatever both missed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from core.cache import CacheBackend, TypedCache
from core.runtime import RuntimeKey
from services.user.schemas import ProfilePublic

log = logging.getLogger(__name__)

NAMESPACE = "user:profile"


class ProfileCache:
    """`ProfilePublic` by user id (canonical UUID text), cache-aside with a TTL."""

    def __init__(self, backend: CacheBackend, ttl: float) -> None:
        self.backend = backend
        self.ttl = ttl
        self._cache: TypedCache[ProfilePublic] = TypedCache(backend, NAMESPACE, ProfilePublic)

    async def get(self, user_id: str,
                  load: Callable[[], Awaitable[ProfilePublic]]) -> ProfilePublic:
        """The cached profile, or `load()`'s (then cached); a cache that is away is skipped."""
        return await self._cache.get_or_load(user_id, load, self.ttl)

    async def invalidate(self, user_id: str) -> None:
        """Drop the entry; raises when the backend cannot be reached (the caller retries)."""
        await self._cache.invalidate(user_id)

    async def invalidate_after_write(self, user_id: str) -> None:
        """Drop the entry after a committed write. A failure is logged, not raised: the write
        is done and must be answered as such; the event's invalidation retries it."""
        try:
            await self._cache.invalidate(user_id)
        except Exception as exc:
            log.warning("could not invalidate profile %s after a write (the event will): %s",
                        user_id, exc)

    async def close(self) -> None:
        await self.backend.close()


CACHE = RuntimeKey("profile_cache", ProfileCache)
"""The service's one profile cache, shared by its routes and its invalidation handler."""
