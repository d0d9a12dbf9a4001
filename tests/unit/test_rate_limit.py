"""The rate limiter's arithmetic and its fallback on a clock the test moves (the same cases
against real Redis: tests/contracts/test_rate_limit_contract.py)."""

from __future__ import annotations

import pytest

from core.config import Settings
from core.resilience.rate_limit import (
    Decision,
    FallbackRateLimiter,
    LocalRateLimiter,
    RateLimiterUnavailableError,
    RateLimitPolicy,
    rate_limiter,
)
from core.resilience.rate_limit_redis import RedisRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


FOUR_PER_8S = RateLimitPolicy("api", 4, 8)  # one unit back every 2 s


async def test_gcra_spends_the_burst_then_refills_one_unit_per_interval() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(clock=clock)
    burst = [await limiter.hit("c", FOUR_PER_8S) for _ in range(5)]
    assert [(d.allowed, d.remaining) for d in burst] == [
        (True, 3), (True, 2), (True, 1), (True, 0), (False, 0)]
    assert [d.reset_after for d in burst] == [2, 4, 6, 8, 8]
    assert [d.retry_after for d in burst] == [0, 0, 0, 0, 2]
    clock.now += 1.5
    refused = await limiter.hit("c", FOUR_PER_8S)
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    clock.now += 0.5
    again = await limiter.hit("c", FOUR_PER_8S)
    assert again.allowed and again.remaining == 0 and again.reset_after == pytest.approx(8)
    clock.now += 100  # long idle: a full quota, no more
    assert (await limiter.hit("c", FOUR_PER_8S)).remaining == 3


@pytest.mark.parametrize("policy", [
    RateLimitPolicy("one", 1, 60), RateLimitPolicy("ten", 10, 60),
    RateLimitPolicy("thirds", 3, 10), RateLimitPolicy("sevens", 7, 1)])
@pytest.mark.parametrize("power", [16, 17, 20, 27])
async def test_a_whole_burst_gets_in_however_near_the_clock_is_to_a_power_of_two(
    policy: RateLimitPolicy, power: int
) -> None:
    # On float seconds, now + window - window rounds above now when now + window crosses a
    # power of two, and the burst's last request was refused (a monotonic clock is there
    # for `window` seconds every 2**16 s, 18 hours after boot).
    for before in (0.1, 1.3, 7.77, policy.window / 2, policy.window - 0.01):
        clock = Clock()
        clock.now = 2.0**power - before
        limiter = LocalRateLimiter(clock=clock)
        burst = [await limiter.hit("c", policy) for _ in range(policy.limit + 1)]
        assert [d.allowed for d in burst] == [True] * policy.limit + [False], before
        assert [d.remaining for d in burst] == [*range(policy.limit - 1, -1, -1), 0]
        assert burst[-1].retry_after == pytest.approx(policy.interval)
        clock.now += policy.interval + 1e-6  # the float clock itself rounds at 2**27
        assert (await limiter.hit("c", policy)).allowed, "one unit back after one interval"


async def test_a_policy_whose_limit_changes_starts_afresh() -> None:
    limiter = LocalRateLimiter(clock=Clock())
    assert (await limiter.hit("c", RateLimitPolicy("api", 1, 60))).allowed
    assert not (await limiter.hit("c", RateLimitPolicy("api", 1, 60))).allowed
    assert (await limiter.hit("c", RateLimitPolicy("api", 2, 60))).remaining == 1


async def test_cost_is_checked_and_a_refusal_spends_nothing() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(clock=clock)
    assert (await limiter.hit("c", FOUR_PER_8S, cost=4)).remaining == 0
    assert not (await limiter.hit("c", FOUR_PER_8S)).allowed
    clock.now += 2
    assert (await limiter.hit("c", FOUR_PER_8S)).allowed
    for cost in (0, 5):
        with pytest.raises(ValueError, match="between 1 and the limit 4"):
            await limiter.hit("c", FOUR_PER_8S, cost=cost)
    assert (await limiter.hit("c", FOUR_PER_8S, cost=1)).allowed is False


async def test_the_least_recent_key_is_dropped_beyond_max_keys() -> None:
    limiter = LocalRateLimiter(max_keys=2, clock=Clock())
    one = RateLimitPolicy("one", 1, 60)
    for key in ("a", "b", "a", "c"):  # "b" is the least recently seen when "c" comes
        await limiter.hit(key, one)
    assert not (await limiter.hit("a", one)).allowed
    assert (await limiter.hit("b", one)).allowed, "b was dropped: a full quota again"
    await limiter.close()
    assert (await limiter.hit("a", one)).allowed


@pytest.mark.parametrize(
    ("limit", "window", "message"),
    [(0, 1, "limit must be >= 1"), (1, 0, "window must be > 0"), (1, -1, "window must be > 0")],
)
def test_a_policy_that_cannot_work_is_refused(limit: int, window: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimitPolicy("p", limit, window)


@pytest.mark.parametrize("name", ["", 'a"b', "a\\b"])
def test_a_policy_name_must_fit_in_a_header(name: str) -> None:
    with pytest.raises(ValueError, match="without quotes"):
        RateLimitPolicy(name, 1, 1)


async def test_a_decision_names_its_policy_in_its_headers() -> None:
    limiter, policy = LocalRateLimiter(clock=Clock()), RateLimitPolicy("X-api", 2, 10)
    assert (await limiter.hit("c", policy)).headers() == {
        "RateLimit-Policy": '"X-api";q=2;w=10', "RateLimit": '"X-api";r=1;t=5'}


def test_headers_round_seconds_up_and_name_the_policy() -> None:
    policy = RateLimitPolicy("per-user", 100, 60.0)
    ok = Decision(policy, True, 42, 17.2, 0.0)
    assert ok.headers() == {"RateLimit-Policy": '"per-user";q=100;w=60',
                            "RateLimit": '"per-user";r=42;t=18'}
    refused = Decision(policy, False, 0, 60.0, 0.6).headers()
    assert refused["Retry-After"] == "1" and refused["RateLimit"] == '"per-user";r=0;t=60'
    assert Decision(policy, True, 0, 3.0, 0.0).headers()["RateLimit"].endswith("t=3")
    assert Decision(policy, False, 0, 0.0, 0.0).headers()["Retry-After"] == "0"
    assert RateLimitPolicy("p", 1, 0.5).interval == 0.5


class Flaky:
    """A primary that fails while `down`; counts what it was asked."""

    def __init__(self) -> None:
        self.down = False
        self.asked = 0
        self.closed = False
        self.local = LocalRateLimiter(clock=Clock())

    async def hit(self, key: str, policy: RateLimitPolicy, cost: int = 1) -> Decision:
        self.asked += 1
        if self.down:
            raise RateLimiterUnavailableError("connection refused")
        return await self.local.hit(key, policy, cost)

    async def close(self) -> None:
        self.closed = True


async def test_the_fallback_decides_during_the_cooldown_then_the_primary_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, primary, fallback = Clock(), Flaky(), LocalRateLimiter(clock=Clock())
    limiter = FallbackRateLimiter(primary, fallback, cooldown=5, clock=clock)
    two = RateLimitPolicy("two", 2, 60)
    assert (await limiter.hit("c", two)).remaining == 1 and not limiter.degraded
    assert (await limiter.hit("other", two)).remaining == 1, "keys apart in the primary"
    primary.asked -= 1
    primary.down = True
    assert (await limiter.hit("c", two)).remaining == 1, "the fallback starts full"
    assert "shared rate limiter unavailable" in caplog.text, "the first failure is logged"
    assert limiter.degraded and primary.asked == 2
    clock.now += 4.9
    assert (await limiter.hit("c", two)).remaining == 0
    assert primary.asked == 2, "asked within the cool-down"
    clock.now += 0.1
    assert not (await limiter.hit("c", two)).allowed
    assert primary.asked == 3 and limiter.degraded
    primary.down = False
    clock.now += 5
    assert (await limiter.hit("c", two)).remaining == 0
    assert not limiter.degraded and primary.asked == 4
    assert caplog.text.count("shared rate limiter unavailable") == 1, "logged once an outage"
    assert caplog.text.count("limits are shared again") == 1
    assert (await limiter.hit("c", FOUR_PER_8S, cost=3)).remaining == 1, "cost reaches Redis"
    primary.down = True
    assert (await limiter.hit("d", FOUR_PER_8S, cost=3)).remaining == 1, "and the fallback"
    assert (await limiter.hit("d", FOUR_PER_8S, cost=2)).allowed is False, "during the cool-down"
    await limiter.close()
    assert primary.closed


def test_redis_is_used_when_configured() -> None:
    shared = rate_limiter(Settings(redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(shared, FallbackRateLimiter)
    assert isinstance(shared.primary, RedisRateLimiter)
    assert isinstance(shared.fallback, LocalRateLimiter)
    assert isinstance(rate_limiter(Settings(redis_url=None)), LocalRateLimiter)


async def test_a_refusal_is_a_429_with_the_headers() -> None:
    from fastapi import FastAPI
    from httpx import ASGITransport, AsyncClient

    from core.bases import TooManyRequestsError, install_exception_handlers

    app, limiter = FastAPI(), LocalRateLimiter(clock=Clock())
    install_exception_handlers(app)
    one = RateLimitPolicy("one", 1, 30)

    @app.get("/thing")
    async def thing() -> dict[str, str]:
        decision = await limiter.hit("client", one)
        if not decision.allowed:
            raise TooManyRequestsError(headers=decision.headers())
        return {"ok": "yes"}

    async with AsyncClient(transport=ASGITransport(app), base_url="http://t") as client:
        assert (await client.get("/thing")).status_code == 200
        refused = await client.get("/thing")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["ratelimit"] == '"one";r=0;t=30'
