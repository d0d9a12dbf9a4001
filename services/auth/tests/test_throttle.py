"""The failed-login throttle, the same cases on each store: Redis (real server), SQLite and
PostgreSQL (real server). A controlled clock drives the windows, waits and locks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from core.db import Database, migrations
from services.auth.main import SERVICE_DIR
from services.auth.throttle import (
    FailureStore,
    LoginThrottle,
    ThrottledError,
    ThrottlePolicy,
    ThrottleUnavailableError,
)
from services.auth.throttle.database import DatabaseFailureStore
from services.auth.throttle.redis import RedisFailureStore
from tests.helpers import unique
from tests.integration.databases import DatabaseFactory

ACCOUNT = ThrottlePolicy("account", window_seconds=60, slow_after=3, lock_after=6,
                         slow_seconds=2, slow_max_seconds=5, lock_seconds=100)
CLIENT = ThrottlePolicy("client", window_seconds=60, slow_after=10, lock_after=20,
                        slow_seconds=1, slow_max_seconds=5, lock_seconds=50)
STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
          pytest.param("redis", marks=pytest.mark.redis)]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.25

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=STORES)
async def store(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FailureStore]:
    if request.param == "redis":
        redis = RedisFailureStore(request.getfixturevalue("redis").url, prefix=unique("t"),
                                  timeout=5.0)
        yield redis
        await redis.close()
        return
    server: Any = request.getfixturevalue("postgres") if request.param == "postgres" else None
    factory = DatabaseFactory(request.param, tmp_path_factory.mktemp("throttle"), server)
    database = Database(await factory.new())
    await migrations.upgrade(SERVICE_DIR, database)
    yield DatabaseFailureStore(database)
    await database.dispose()
    await factory.drop_all()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(store: FailureStore, clock: Clock) -> LoginThrottle:
    return LoginThrottle(store, ACCOUNT, CLIENT, clock=clock)


async def waits(throttle: LoginThrottle, account: str | None, client: str | None = None
                ) -> float:
    try:
        await throttle.check(account=account, client=client)
    except ThrottledError as e:
        return float(e.headers["Retry-After"])
    return 0.0


async def fail(throttle: LoginThrottle, account: str | None, times: int = 1,
               client: str | None = None) -> None:
    for _ in range(times):
        await throttle.failed(account=account, client=client)


async def test_slowed_from_slow_after_then_doubling_up_to_the_cap(
    throttle: LoginThrottle, clock: Clock,
) -> None:
    who = unique("a")
    await fail(throttle, who, 2)
    assert await waits(throttle, who) == 0
    await fail(throttle, who)  # 3rd: slowed, 2 s
    assert await waits(throttle, who) == 2
    clock.now += 1.5
    assert await waits(throttle, who) == 1, "counted from the last failure"
    clock.now += 0.6
    assert await waits(throttle, who) == 0
    await fail(throttle, who)  # 4th: 4 s
    assert await waits(throttle, who) == 4
    clock.now += 4.1
    await fail(throttle, who)  # 5th: 8 s, capped at 5
    assert await waits(throttle, who) == 5


async def test_locked_at_lock_after_until_the_lock_ends_then_counted_afresh(
    throttle: LoginThrottle, clock: Clock,
) -> None:
    who = unique("a")
    await fail(throttle, who, 6)
    assert await waits(throttle, who) == 100
    clock.now += 99.5
    assert await waits(throttle, who) == 1
    clock.now += 0.6
    assert await waits(throttle, who) == 0
    await fail(throttle, who)
    assert await waits(throttle, who) == 0, "the lock ended: the count began again at 1"


async def test_a_window_that_ran_out_starts_the_count_again(
    throttle: LoginThrottle, clock: Clock,
) -> None:
    who = unique("a")
    await fail(throttle, who, 2)
    clock.now += 61
    await fail(throttle, who, 2)
    assert await waits(throttle, who) == 0, "2 + 2 failures, but in two windows"
    await fail(throttle, who)
    assert await waits(throttle, who) == 2


async def test_a_success_resets_the_account_but_not_the_client(
    throttle: LoginThrottle, clock: Clock,
) -> None:
    who, address = unique("a"), unique("ip")
    await fail(throttle, who, 10, client=address)
    assert await waits(throttle, who) == 100, "the account is locked"
    assert await waits(throttle, None, address) == 1, "the client is slowed"
    await throttle.succeeded(account=who)
    assert await waits(throttle, who) == 0
    assert await waits(throttle, who, address) == 1, "the client keeps its count"
    assert await waits(throttle, unique("b"), address) == 1, "whichever account it tries"


async def test_keys_are_apart(throttle: LoginThrottle) -> None:
    one, other = unique("a"), unique("a")
    await fail(throttle, one, 6)
    assert await waits(throttle, one) > 0
    assert await waits(throttle, other) == 0
    assert await waits(throttle, None, one) == 0, "an account and a client are apart"


async def test_concurrent_failures_are_all_counted(throttle: LoginThrottle,
                                                   store: FailureStore) -> None:
    who = unique("a")
    await asyncio.gather(*(throttle.failed(account=who, client=None) for _ in range(12)))
    state = await store.load(f"login:account:{who}", ACCOUNT)
    assert state is not None and state.failures == 12


async def test_redis_keys_expire_by_themselves(redis: Any, clock: Clock) -> None:
    """Redis forgets a key by itself, once no state of it can matter any more."""
    store = RedisFailureStore(redis.url, prefix=unique("t"), timeout=5.0)
    try:
        who = unique("a")
        await store.record(f"login:account:{who}", ACCOUNT, clock())
        ttl = await store._redis.pttl(f"{store._prefix}:login:account:{who}")
        assert 0 < ttl <= ACCOUNT.ttl_seconds * 1000
    finally:
        await store.close()


async def test_the_database_store_forgets_stale_keys_when_pruned(
        tmp_path_factory: pytest.TempPathFactory, clock: Clock) -> None:
    """Keys that never fail again (guessed emails) must not grow the table for ever."""
    factory = DatabaseFactory("sqlite", tmp_path_factory.mktemp("prune"), None)
    database = Database(await factory.new())
    await migrations.upgrade(SERVICE_DIR, database)
    store = DatabaseFailureStore(database)
    try:
        await store.record("old", ACCOUNT, clock() - ACCOUNT.ttl_seconds - 1)
        await store.record("new", ACCOUNT, clock())
        assert await store.prune(clock() - ACCOUNT.ttl_seconds) == 1
        assert await store.load("old", ACCOUNT) is None
        assert await store.load("new", ACCOUNT) is not None
    finally:
        await database.dispose()
        await factory.drop_all()


@pytest.mark.parametrize("away", ["redis", "postgres"])
async def test_a_store_away_is_a_503_not_unlimited_guesses(away: str) -> None:
    store: FailureStore = (
        RedisFailureStore("redis://127.0.0.1:1", timeout=0.2) if away == "redis"
        else DatabaseFailureStore.from_url("postgresql+asyncpg://nobody@127.0.0.1:1/auth"))
    try:
        for attempt in (store.load("k", ACCOUNT), store.record("k", ACCOUNT, 1.0)):
            with pytest.raises(ThrottleUnavailableError) as caught:
                await attempt
            assert caught.value.status_code == 503
            assert caught.value.headers["Retry-After"] == "5"
    finally:
        await store.close()
