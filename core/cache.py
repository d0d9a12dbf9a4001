"""Cache-aside with a TTL: Redis when `REDIS_URL` is set, an in-process LRU otherwise.

    cache = TypedCache(cache_backend(settings), "user", Profile)
    profile = await cache.get_or_load(user_id, lambda: load_profile(user_id), ttl=60)
    await cache.invalidate(user_id)          # when an event says the profile changed

- A miss calls the loader and stores what it returns; concurrent misses for one key in this
  process share one load ("single flight"), so a popular key that expires does not send a
  burst of identical queries to the database. An invalidation detaches a load in flight:
  reads after it load afresh, and the detached load's value (read before the change, maybe)
  is not cached.
- The cache is an optimisation, never the source of truth: when Redis is away, or holds
  bytes that no longer parse as the model, the value is loaded from the source and the
  failure is logged; a request never fails because of its cache.
- Values are the model's JSON (pydantic), so services in other languages or versions can read
  them, and a model change shows up as a parse failure (a reload), not as a wrong object.
- Invalidation deletes the key everywhere the backend reaches: in Redis, every instance sees
  it at its next read; the in-process LRU is per process (fine for one instance or tests).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from pydantic import TypeAdapter, ValidationError
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from core.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


class CacheBackend(Protocol):
    """Bytes by key with a TTL. Implementations raise on failure; `TypedCache` decides what a
    failure means (a miss)."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    """An in-process LRU of at most `max_entries` keys, each expiring after its TTL (by the
    monotonic clock). One event loop; no locks needed."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._entries[key] = (time.monotonic() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._entries.pop(key, None)

    async def close(self) -> None:
        self._entries.clear()


class RedisCache:
    """Redis, shared by every instance of a service. Each call is one round trip with a short
    socket timeout, so a Redis that hangs costs a request at most that long."""

    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        self._redis = aioredis.Redis.from_url(url, socket_timeout=timeout,
                                              socket_connect_timeout=timeout)

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._redis.set(key, value, px=max(1, int(ttl * 1000)))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._redis.delete(*keys)

    async def close(self) -> None:
        await self._redis.aclose()


def cache_backend(settings: Settings) -> CacheBackend:
    """Redis when `REDIS_URL` is set, else the in-process LRU."""
    return RedisCache(settings.redis_url) if settings.redis_url else MemoryCache()


class TypedCache(Generic[T]):
    """Cache-aside for values of one type under one namespace (`<namespace>:<key>`)."""

    def __init__(self, backend: CacheBackend, namespace: str, value_type: type[T] | Any) -> None:
        self.backend = backend
        self.namespace = namespace
        self._adapter: TypeAdapter[T] = TypeAdapter(value_type)
        self._loading: dict[str, asyncio.Future[T]] = {}
        """Loads in flight, by key: a read that misses joins the one of its key."""
        self._writing: dict[str, asyncio.Future[T]] = {}
        """Loads whose value is being written to the backend."""
        self._detached: set[asyncio.Future[T]] = set()
        """Loads an invalidation overtook: their value is not (or no longer) cached."""

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    async def get_or_load(self, key: str, loader: Callable[[], Awaitable[T]], ttl: float) -> T:
        """The cached value of `key`, or what `loader()` returns (then cached for `ttl`
        seconds). A loader's exception reaches the caller (and every caller sharing the
        load); nothing is cached then."""
        full = self._key(key)
        cached = await self._read(full)
        if cached is not None:
            return cached
        running = self._loading.get(full)
        if running is not None:
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not running.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The caller doing the shared load was cancelled, not us: load ourselves.
        return await self._load(full, loader, ttl)

    async def _load(self, full: str, loader: Callable[[], Awaitable[T]], ttl: float) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._loading[full] = future
        try:
            try:
                value = await loader()
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception as exc:
                future.set_exception(exc)
                future.exception()  # marked retrieved: with no waiter, asyncio stays quiet
                raise
            finally:
                if self._loading.get(full) is future:
                    del self._loading[full]
            future.set_result(value)
            if future in self._detached:
                return value  # invalidated while loading: the value may predate the change
            self._writing[full] = future
            try:
                await self._write(full, value, ttl)
            finally:
                if self._writing.get(full) is future:
                    del self._writing[full]
            if future in self._detached:
                # Invalidated while the value was on its way: the delete may have landed
                # first, so take out what we wrote (at worst a newer value: one more miss).
                await self._delete(full)
            return value
        finally:
            self._detached.discard(future)

    async def invalidate(self, *keys: str) -> None:
        """Drop `keys`; the next read loads from the source. A load in flight is detached:
        reads that begin after this call start their own, and its value (which may predate
        the change) is not kept. Raises if the backend cannot be reached: a stale entry
        would otherwise live until its TTL, and the caller (an event handler, say) should
        retry."""
        full = [self._key(k) for k in keys]
        for key in full:
            for flights in (self._loading, self._writing):
                detached = flights.pop(key, None)
                if detached is not None:
                    self._detached.add(detached)
        await self.backend.delete(*full)

    async def _delete(self, key: str) -> None:
        try:
            await self.backend.delete(key)
        except (RedisError, OSError) as exc:
            log.warning("cache %s unavailable, %s may stay stale until its TTL: %s",
                        self.namespace, key, exc)

    async def _read(self, key: str) -> T | None:
        try:
            raw = await self.backend.get(key)
        except (RedisError, OSError) as exc:
            log.warning("cache %s unavailable, loading from the source: %s", self.namespace,
                        exc)
            return None
        if raw is None:
            return None
        try:
            return self._adapter.validate_json(raw)
        except ValidationError:
            log.warning("cache entry %s no longer parses; reloading it", key)
            return None

    async def _write(self, key: str, value: T, ttl: float) -> None:
        try:
            await self.backend.set(key, self._adapter.dump_json(value), ttl)
        except (RedisError, OSError) as exc:
            log.warning("cache %s unavailable, not caching %s: %s", self.namespace, key, exc)
