"""Rate limits per client: exact across replicas through Redis, in-process otherwise.

    limiter = rate_limiter(settings)                       # Redis when REDIS_URL is set
    policy = RateLimitPolicy("per-user", limit=100, window=60)
    decision = await limiter.hit(f"user:{user_id}", policy)
    if not decision.allowed:
        ...  # 429 with decision.headers()

The algorithm is GCRA (the generic cell rate algorithm, a leaky bucket kept as one timestamp
per key): `limit` requests may come at once, then one every `window / limit` seconds. It
stores a single number per key and never sweeps, so memory is O(active keys), and it has no
window edges where a client could send twice its limit.

- Redis: one round trip per check (a Lua script that reads and writes the key atomically),
  judged by Redis's own clock (`TIME`), so replicas with skewed clocks agree and the limit is
  exact however many gateways share it.
- In-process: the same algorithm on the monotonic clock, in exact integers, in a bounded
  LRU of keys.
- `FallbackRateLimiter`: Redis first; while Redis is away, the in-process limiter (each
  replica then enforces the limit on its own share of traffic, which is better than failing
  every request closed or letting every request through). Redis is tried again after a
  cool-down, so an outage does not cost every request a socket timeout.

Headers follow the IETF draft (draft-ietf-httpapi-ratelimit-headers-10/11):
`RateLimit-Policy: "per-user";q=100;w=60` and `RateLimit: "per-user";r=42;t=18`, plus
`Retry-After` on a refusal.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from core.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    """`limit` units per `window` seconds, all of them usable at once (the burst)."""

    name: str
    limit: int
    window: float

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"rate limit {self.name!r}: limit must be >= 1")
        if self.window <= 0:
            raise ValueError(f"rate limit {self.name!r}: window must be > 0 seconds")
        if not self.name or any(c in self.name for c in '"\\'):
            raise ValueError(f"rate limit name {self.name!r} must be non-empty, without quotes")

    @property
    def interval(self) -> float:
        """Seconds one unit takes to come back."""
        return self.window / self.limit


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check, and what to tell the client about it."""

    policy: RateLimitPolicy
    allowed: bool
    remaining: int
    reset_after: float
    """Seconds until the full quota is back."""
    retry_after: float
    """Seconds until this request would be allowed (0 when it was)."""

    def headers(self) -> dict[str, str]:
        """The draft's `RateLimit` and `RateLimit-Policy` fields, and `Retry-After` when
        refused (whole seconds, rounded up: a client that waits that long gets in)."""
        p = self.policy
        headers = {
            "RateLimit-Policy": f'"{p.name}";q={p.limit};w={_seconds(p.window)}',
            "RateLimit": f'"{p.name}";r={self.remaining};t={_seconds(self.reset_after)}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(_seconds(self.retry_after))
        return headers


def _seconds(value: float) -> int:
    return max(0, math.ceil(value - 1e-9))


class RateLimiter(Protocol):
    async def hit(self, key: str, policy: RateLimitPolicy, cost: int = 1) -> Decision:
        """Spend `cost` units of `key`'s quota under `policy`, if it has them."""
        ...

    async def close(self) -> None: ...


class RateLimiterUnavailableError(Exception):
    """The shared limiter (Redis) could not be asked."""


def check_cost(policy: RateLimitPolicy, cost: int) -> None:
    if not 1 <= cost <= policy.limit:
        raise ValueError(f"cost {cost} must be between 1 and the limit {policy.limit}")


_NS = 1_000_000_000


def _decide(policy: RateLimitPolicy, tat: int, now: int, cost: int) -> tuple[Decision, int]:
    """GCRA: `tat` is when the key's bucket would be empty again ("theoretical arrival
    time"). Returns the decision and the key's new `tat`.

    Exact: `tat` and `now` count 1/limit-ths of a nanosecond, so one unit's interval
    (window / limit) is the window in nanoseconds and nothing rounds. On float seconds,
    `now + window - window` came out above `now` in the `window` seconds before the clock
    crossed a power of two, and the last request of every burst was refused (Retry-After 0)."""
    interval = round(policy.window * _NS)
    window = interval * policy.limit
    tat = max(tat, now)
    new_tat = tat + interval * cost
    allowed_at = new_tat - window
    if now < allowed_at:
        return Decision(policy, False, 0, (tat - now) / window * policy.window,
                        (allowed_at - now) / window * policy.window), tat
    remaining = (window - (new_tat - now)) // interval
    return Decision(policy, True, remaining, (new_tat - now) / window * policy.window, 0.0), new_tat


class LocalRateLimiter:
    """GCRA in this process, for at most `max_keys` keys (least recently seen dropped first:
    a dropped key starts with a full quota, which errs on the side of letting through). A
    policy whose limit or window changes starts every key afresh."""

    def __init__(self, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._tats: OrderedDict[tuple[RateLimitPolicy, str], int] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    async def hit(self, key: str, policy: RateLimitPolicy, cost: int = 1) -> Decision:
        check_cost(policy, cost)
        now, slot = round(self._clock() * _NS) * policy.limit, (policy, key)
        decision, tat = _decide(policy, self._tats.get(slot, now), now, cost)
        self._tats[slot] = tat
        self._tats.move_to_end(slot)
        if len(self._tats) > self._max_keys:
            self._tats.popitem(last=False)
        return decision

    async def close(self) -> None:
        self._tats.clear()


class FallbackRateLimiter:
    """`primary` (Redis) while it answers; `fallback` (in-process) while it does not.

    After a failure the primary is left alone for `cooldown` seconds, then tried again; the
    switch each way is logged once. `degraded` says which one is deciding, for health checks.
    """

    def __init__(self, primary: RateLimiter, fallback: RateLimiter, *, cooldown: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.primary, self.fallback = primary, fallback
        self._cooldown = cooldown
        self._clock = clock
        self._retry_primary_at: float | None = None

    @property
    def degraded(self) -> bool:
        return self._retry_primary_at is not None

    async def hit(self, key: str, policy: RateLimitPolicy, cost: int = 1) -> Decision:
        if self._retry_primary_at is not None and self._clock() < self._retry_primary_at:
            return await self.fallback.hit(key, policy, cost)
        try:
            decision = await self.primary.hit(key, policy, cost)
        except RateLimiterUnavailableError as exc:
            if self._retry_primary_at is None:
                log.warning("shared rate limiter unavailable, limiting in-process until it "
                            "returns: %s", exc)
            self._retry_primary_at = self._clock() + self._cooldown
            return await self.fallback.hit(key, policy, cost)
        if self._retry_primary_at is not None:
            log.warning("shared rate limiter is back; limits are shared again")
            self._retry_primary_at = None
        return decision

    async def close(self) -> None:
        await self.primary.close()
        await self.fallback.close()


def rate_limiter(settings: Settings) -> RateLimiter:
    """Shared through Redis (with the in-process fallback) when `REDIS_URL` is set, else
    in-process only."""
    if settings.redis_url:
        from core.resilience.rate_limit_redis import RedisRateLimiter  # no Redis client otherwise

        return FallbackRateLimiter(RedisRateLimiter(settings.redis_url), LocalRateLimiter())
    return LocalRateLimiter()
