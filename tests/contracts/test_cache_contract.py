"""Cache-aside, the same cases against the in-process LRU and a real Redis: loaded once,
served from the cache, expired by TTL, invalidated for the next read, one load for concurrent
misses, and a cache that is away or holds stale bytes never fails a read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from core.cache import CacheBackend, MemoryCache, RedisCache, TypedCache
from tests.helpers import unique


class Profile(BaseModel):
    user_id: str
    display_name: str


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[CacheBackend]:
    if request.param == "memory":
        cache: CacheBackend = MemoryCache()
    else:
        cache = RedisCache(request.getfixturevalue("redis").url)
    yield cache
    await cache.close()


class Loader:
    """Counts its calls; answers after `delay` seconds."""

    def __init__(self, name: str = "Ada", delay: float = 0.0) -> None:
        self.calls = 0
        self.name = name
        self.delay = delay

    async def __call__(self) -> Profile:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return Profile(user_id="u1", display_name=self.name)


def _cache(backend: CacheBackend) -> TypedCache[Profile]:
    return TypedCache(backend, unique("profile"), Profile)


async def test_a_value_is_loaded_once_then_served_from_the_cache(backend: CacheBackend) -> None:
    cache, load = _cache(backend), Loader()
    first = await cache.get_or_load("u1", load, ttl=30)
    second = await cache.get_or_load("u1", load, ttl=30)
    assert first == second == Profile(user_id="u1", display_name="Ada")
    assert load.calls == 1


async def test_an_entry_expires_after_its_ttl(backend: CacheBackend) -> None:
    cache, load = _cache(backend), Loader()
    await cache.get_or_load("u1", load, ttl=0.2)
    await asyncio.sleep(0.4)
    await cache.get_or_load("u1", load, ttl=0.2)
    assert load.calls == 2


async def test_an_invalidation_is_seen_by_the_next_read(backend: CacheBackend) -> None:
    cache = _cache(backend)
    await cache.get_or_load("u1", Loader("Ada"), ttl=30)
    await cache.invalidate("u1")
    renamed = await cache.get_or_load("u1", Loader("Grace"), ttl=30)
    assert renamed.display_name == "Grace"


async def test_concurrent_misses_share_one_load(backend: CacheBackend) -> None:
    cache, load = _cache(backend), Loader(delay=0.2)
    results = await asyncio.gather(*(cache.get_or_load("u1", load, ttl=30) for _ in range(20)))
    assert load.calls == 1 and len({r.display_name for r in results}) == 1


async def test_a_failing_load_reaches_every_waiter_and_caches_nothing(
    backend: CacheBackend
) -> None:
    cache = _cache(backend)

    async def broken() -> Profile:
        await asyncio.sleep(0.1)
        raise LookupError("no such user")

    outcomes = await asyncio.gather(*(cache.get_or_load("u1", broken, ttl=30) for _ in range(3)),
                                    return_exceptions=True)
    assert all(isinstance(o, LookupError) for o in outcomes)
    load = Loader()
    await cache.get_or_load("u1", load, ttl=30)
    assert load.calls == 1


async def test_bytes_that_no_longer_parse_are_reloaded_not_returned(
    backend: CacheBackend
) -> None:
    cache, load = _cache(backend), Loader()
    await backend.set(f"{cache.namespace}:u1", b'{"user_id": "u1"}', 30)  # an older shape
    assert (await cache.get_or_load("u1", load, ttl=30)).display_name == "Ada"
    assert load.calls == 1
    await cache.get_or_load("u1", load, ttl=30)
    assert load.calls == 1  # the reload replaced the stale entry


@pytest.mark.redis
async def test_redis_away_means_loading_from_the_source(redis: Any) -> None:
    cache = TypedCache(RedisCache("redis://127.0.0.1:1/0", timeout=0.2), "profile", Profile)
    load = Loader()
    assert (await cache.get_or_load("u1", load, ttl=30)).display_name == "Ada"
    assert (await cache.get_or_load("u1", load, ttl=30)).display_name == "Ada"
    assert load.calls == 2
    with pytest.raises(Exception):  # noqa: B017 - an invalidation that cannot happen says so
        await cache.invalidate("u1")
    await cache.backend.close()


async def test_the_memory_cache_keeps_its_most_recent_entries() -> None:
    backend = MemoryCache(max_entries=2)
    cache, load = TypedCache(backend, "p", Profile), Loader()
    for key in ("a", "b"):
        await cache.get_or_load(key, load, ttl=30)
    await cache.get_or_load("a", load, ttl=30)  # a is now the most recent
    await cache.get_or_load("c", load, ttl=30)  # evicts b
    assert load.calls == 3
    await cache.get_or_load("a", load, ttl=30)
    assert load.calls == 3
    await cache.get_or_load("b", load, ttl=30)
    assert load.calls == 4


class Gated:
    """A loader that answers `name` once `release` is set, and says when it has started."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> Profile:
        self.started.set()
        await self.release.wait()
        return Profile(user_id="u1", display_name=self.name)


async def test_an_invalidation_detaches_a_load_in_flight(backend: CacheBackend) -> None:
    """A load that began before the change must neither serve reads that begin after the
    invalidation nor be cached: they load afresh, and the next read sees the new value."""
    cache, old = _cache(backend), Gated("Ada")
    early = asyncio.create_task(cache.get_or_load("u1", old, ttl=30))
    await old.started.wait()
    await cache.invalidate("u1")  # the profile changed while "Ada" was being read
    new = Gated("Grace")
    new.release.set()
    async with asyncio.timeout(5):  # joining the old load would wait for it for ever
        late = await cache.get_or_load("u1", new, ttl=30)
    assert late.display_name == "Grace" and new.started.is_set()
    old.release.set()
    assert (await early).display_name == "Ada"  # it asked before the change
    after = await cache.get_or_load("u1", Loader("Hopper"), ttl=30)
    assert after.display_name == "Grace"  # the old load's value was not stored over it
    assert not (cache._loading or cache._writing or cache._detached)  # nothing kept


async def test_an_invalidation_during_the_write_of_a_load_wins(backend: CacheBackend) -> None:
    """The old value may be on its way to the backend when the invalidation runs: it must
    not outlive the invalidation (the load deletes what it wrote once it sees it was
    detached)."""
    cache = _cache(backend)
    writing, proceed = asyncio.Event(), asyncio.Event()
    original = backend.set

    async def slow_set(key: str, value: bytes, ttl: float) -> None:
        writing.set()
        await proceed.wait()
        await original(key, value, ttl)

    backend.set = slow_set  # type: ignore[method-assign]
    early = asyncio.create_task(cache.get_or_load("u1", Loader("Ada"), ttl=30))
    await writing.wait()
    await cache.invalidate("u1")
    proceed.set()
    await early
    backend.set = original  # type: ignore[method-assign]
    load = Loader("Grace")
    assert (await cache.get_or_load("u1", load, ttl=30)).display_name == "Grace"
    assert load.calls == 1
    assert not (cache._loading or cache._writing or cache._detached)
