"""Cache-aside details the contract suite (tests/contracts/test_cache_contract.py, in memory
and on real Redis) leaves open: the exact expiry instant, namespaces, which cancellation a
shared load passes on, and what the Redis adapter hands to its client."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

import core.cache
from core.cache import MemoryCache, RedisCache, TypedCache, cache_backend
from core.config import Settings


class Profile(BaseModel):
    user_id: str
    display_name: str


def loader(name: str, calls: list[str] | None = None) -> Any:
    async def load() -> Profile:
        if calls is not None:
            calls.append(name)
        return Profile(user_id="u1", display_name=name)
    return load


async def test_an_entry_expires_at_its_ttl_not_after(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(core.cache, "time", SimpleNamespace(monotonic=lambda: now[0]))
    cache = MemoryCache()
    await cache.set("k", b"v", 5)
    now[0] = 104.5
    assert await cache.get("k") == b"v"
    now[0] = 105.0
    assert await cache.get("k") is None


async def test_namespaces_sharing_a_backend_keep_apart() -> None:
    backend = MemoryCache()
    users: TypedCache[Profile] = TypedCache(backend, "user", Profile)
    drivers: TypedCache[Profile] = TypedCache(backend, "driver", Profile)
    await users.get_or_load("1", loader("Ada"), ttl=30)
    assert (await drivers.get_or_load("1", loader("Grace"), ttl=30)).display_name == "Grace"
    assert await backend.get("user:1") == b'{"user_id":"u1","display_name":"Ada"}'


class Gate:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> Profile:
        self.started.set()
        await self.release.wait()
        return Profile(user_id="u1", display_name="Ada")


async def _leader_and_follower(cache: TypedCache[Profile], calls: list[str]
                               ) -> tuple[asyncio.Task[Profile], asyncio.Task[Profile]]:
    gate = Gate()
    leader = asyncio.create_task(cache.get_or_load("u1", gate, ttl=30))
    await gate.started.wait()
    follower = asyncio.create_task(cache.get_or_load("u1", loader("Grace", calls), ttl=30))
    await asyncio.sleep(0)  # one step: the memory backend never suspends, so it joins the load
    assert calls == []
    return leader, follower


async def test_a_waiter_whose_shared_load_is_cancelled_loads_itself() -> None:
    cache: TypedCache[Profile] = TypedCache(MemoryCache(), "p", Profile)
    calls: list[str] = []
    leader, follower = await _leader_and_follower(cache, calls)
    leader.cancel()
    assert (await follower).display_name == "Grace" and calls == ["Grace"]
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_a_waiter_cancelled_itself_stays_cancelled_even_if_the_load_was_too() -> None:
    cache: TypedCache[Profile] = TypedCache(MemoryCache(), "p", Profile)
    calls: list[str] = []
    leader, follower = await _leader_and_follower(cache, calls)
    leader.cancel()
    follower.cancel()
    for task in (leader, follower):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert calls == []


class RecordingRedis:
    """Stands in for `redis.asyncio.Redis`: records the calls the adapter makes."""

    def __init__(self, stored: object = None) -> None:
        self.stored = stored
        self.calls: list[tuple[Any, ...]] = []

    async def get(self, key: str) -> object:
        self.calls.append(("get", key))
        return self.stored

    async def set(self, key: str, value: bytes, *, px: int) -> None:
        self.calls.append(("set", key, value, px))

    async def delete(self, *keys: str) -> None:
        self.calls.append(("delete", *keys))


def _redis_cache(client: RecordingRedis) -> RedisCache:
    cache = RedisCache("redis://127.0.0.1:1/0")
    cache._redis = client  # type: ignore[assignment]
    return cache


async def test_the_redis_adapter_connects_with_short_timeouts() -> None:
    cache = RedisCache("redis://cache.internal:6380/3")
    kwargs = cache._redis.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.internal", 6380, 3)
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.5
    await cache.close()


async def test_the_redis_adapter_sets_the_ttl_in_milliseconds_at_least_one() -> None:
    client = RecordingRedis()
    cache = _redis_cache(client)
    await cache.set("k", b"v", 2.5)
    await cache.set("k", b"v", 0.0001)
    assert client.calls == [("set", "k", b"v", 2500), ("set", "k", b"v", 1)]


async def test_the_redis_adapter_reads_bytes_only() -> None:
    assert await _redis_cache(RecordingRedis(b"v")).get("k") == b"v"
    text = RecordingRedis("v")  # a client with decode_responses would answer text
    assert await _redis_cache(text).get("k") is None
    assert text.calls == [("get", "k")]


async def test_the_redis_adapter_deletes_every_key_and_skips_an_empty_call() -> None:
    client = RecordingRedis()
    cache = _redis_cache(client)
    await cache.delete()
    await cache.delete("a", "b")
    assert client.calls == [("delete", "a", "b")]


async def test_the_backend_is_redis_only_when_a_url_is_set() -> None:
    shared = cache_backend(Settings(redis_url="redis://cache.internal:6380/0"))
    assert isinstance(shared, RedisCache)
    assert shared._redis.connection_pool.connection_kwargs["host"] == "cache.internal"
    await shared.close()
    assert isinstance(cache_backend(Settings(redis_url=None)), MemoryCache)
