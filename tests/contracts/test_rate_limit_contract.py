"""Rate limiting, the same cases in-process and on a real Redis: the burst, the refusal with
when to come back, the refill, keys and policies apart, cost, the draft's headers, and the
exact count under concurrency. Then what only Redis gives (one limit across replicas) and
what happens while it is away (the in-process fallback, and back)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.resilience.rate_limit import (
    FallbackRateLimiter,
    LocalRateLimiter,
    RateLimiter,
    RateLimiterUnavailableError,
    RateLimitPolicy,
)
from core.resilience.rate_limit_redis import RedisRateLimiter
from tests.helpers import unique


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    made: RateLimiter
    if request.param == "redis":
        # A generous timeout: these cases are about the counts, and a loaded CI machine can
        # take longer than the production default to open a burst of connections.
        made = RedisRateLimiter(request.getfixturevalue("redis").url, prefix=unique("rl"),
                                timeout=5.0)
    else:
        made = LocalRateLimiter()
    yield made
    await made.close()


def policy(limit: int, window: float) -> RateLimitPolicy:
    return RateLimitPolicy(unique("p"), limit, window)


async def test_the_whole_limit_may_come_at_once_then_requests_are_refused(
    limiter: RateLimiter,
) -> None:
    per_minute = policy(3, 60)
    decisions = [await limiter.hit("client", per_minute) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert 19 < refused.retry_after <= 20, "one unit comes back every 20 s"
    assert 59 < refused.reset_after <= 60
    assert decisions[0].retry_after == 0
    assert 19 < decisions[0].reset_after <= 20


async def test_quota_comes_back_one_unit_per_interval(limiter: RateLimiter) -> None:
    two_per_2s = policy(2, 2)
    assert [(await limiter.hit("c", two_per_2s)).allowed for _ in range(3)] == [
        True, True, False]
    await asyncio.sleep(1.1)  # one unit back, not two
    assert [(await limiter.hit("c", two_per_2s)).allowed for _ in range(2)] == [True, False]


async def test_keys_and_policies_have_quotas_of_their_own(limiter: RateLimiter) -> None:
    one, other = policy(1, 60), policy(1, 60)
    assert (await limiter.hit("a", one)).allowed
    assert not (await limiter.hit("a", one)).allowed
    assert (await limiter.hit("b", one)).allowed
    assert (await limiter.hit("a", other)).allowed


async def test_a_costly_request_spends_several_units_and_a_refused_one_spends_none(
    limiter: RateLimiter,
) -> None:
    five = policy(5, 60)
    first = await limiter.hit("c", five, cost=3)
    assert first.allowed and first.remaining == 2
    refused = await limiter.hit("c", five, cost=3)
    assert not refused.allowed
    assert 11 < refused.retry_after <= 12, "one more unit (12 s) would make room"
    assert (await limiter.hit("c", five, cost=2)).allowed
    with pytest.raises(ValueError, match="between 1 and the limit 5"):
        await limiter.hit("c", five, cost=6)


async def test_headers_follow_the_ietf_draft(limiter: RateLimiter) -> None:
    p = RateLimitPolicy(unique("api"), 2, 10)
    allowed = await limiter.hit("c", p)
    assert allowed.headers() == {"RateLimit-Policy": f'"{p.name}";q=2;w=10',
                                 "RateLimit": f'"{p.name}";r=1;t=5'}
    await limiter.hit("c", p)
    refused = (await limiter.hit("c", p)).headers()
    assert refused["RateLimit"] == f'"{p.name}";r=0;t=10'
    assert refused["Retry-After"] == "5"


async def test_concurrent_requests_get_exactly_the_limit(limiter: RateLimiter) -> None:
    ten = policy(10, 60)
    decisions = await asyncio.gather(*(limiter.hit("burst", ten) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10


@pytest.mark.redis
async def test_replicas_sharing_redis_share_one_exact_limit(redis: Any) -> None:
    prefix, ten = unique("rl"), policy(10, 60)
    replicas = [RedisRateLimiter(redis.url, prefix=prefix, timeout=5.0) for _ in range(3)]
    try:
        decisions = await asyncio.gather(
            *(replicas[i % 3].hit("client", ten) for i in range(45)))
        assert sum(d.allowed for d in decisions) == 10
    finally:
        for replica in replicas:
            await replica.close()


@pytest.mark.redis
async def test_while_redis_is_away_limits_are_kept_in_process_then_shared_again(
    redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    shared = RedisRateLimiter(redis.url, prefix=unique("rl"), timeout=0.5)
    limiter = FallbackRateLimiter(shared, LocalRateLimiter(), cooldown=0.2)
    three = policy(3, 60)
    try:
        assert (await limiter.hit("c", three)).remaining == 2
        await asyncio.to_thread(redis.stop)
        with pytest.raises(RateLimiterUnavailableError):
            await shared.hit("c", three)
        asked = []
        real_hit = shared.hit

        async def counted(*args: Any, **kwargs: Any) -> Any:
            asked.append(args)
            return await real_hit(*args, **kwargs)

        shared.hit = counted  # type: ignore[method-assign]
        local = [await limiter.hit("c", three) for _ in range(4)]
        assert limiter.degraded
        assert len(asked) == 1, "Redis was asked again within the cool-down"
        assert [d.allowed for d in local] == [True, True, True, False], (
            "the in-process limiter keeps limiting, from a full quota")
        assert caplog.text.count("shared rate limiter unavailable") == 1
        await asyncio.to_thread(redis.restart)
        await asyncio.sleep(0.3)  # past the cool-down: Redis is asked again
        back = await limiter.hit("c", three)
        assert not limiter.degraded
        assert back.allowed and back.remaining == 2, (
            "Redis decides again (it restarted empty); the exhausted local quota does not")
        assert "limits are shared again" in caplog.text
    finally:
        await limiter.close()
