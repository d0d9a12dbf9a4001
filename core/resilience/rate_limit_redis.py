"""The shared rate limiter: GCRA in Redis (see `core.resilience.rate_limit` for the algorithm
and the in-process twin). Apart because it is I/O: its tests run against a real Redis
(tests/contracts/test_rate_limit_contract.py), not in the unit suite `make mutate` uses."""

from __future__ import annotations

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from core.resilience.rate_limit import (
    Decision,
    RateLimiterUnavailableError,
    RateLimitPolicy,
    check_cost,
)

# GCRA in microseconds on Redis's clock. Returns {allowed, remaining, reset_us, retry_us}.
_GCRA = """
local window = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allowed_at = new_tat - window
if now < allowed_at then
  return {0, 0, tat - now, allowed_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((window - (new_tat - now)) / interval + 0.000001), new_tat - now, 0}
"""


class RedisRateLimiter:
    """GCRA in Redis: one round trip per check, Redis's clock, exact across replicas.

    Keys are `<prefix>:<policy>:<key>` and expire when their bucket is full again, so idle
    clients cost nothing. Raises `RateLimiterUnavailableError` when Redis cannot answer within
    `timeout`."""

    def __init__(self, url: str, *, prefix: str = "ratelimit", timeout: float = 0.25) -> None:
        self._redis = aioredis.Redis.from_url(url, socket_timeout=timeout,
                                              socket_connect_timeout=timeout)
        self._script = self._redis.register_script(_GCRA)
        self._prefix = prefix

    async def hit(self, key: str, policy: RateLimitPolicy, cost: int = 1) -> Decision:
        check_cost(policy, cost)
        window_us = round(policy.window * 1_000_000)
        try:
            allowed, remaining, reset_us, retry_us = await self._script(
                keys=[f"{self._prefix}:{policy.name}:{key}"],
                args=[window_us, window_us / policy.limit, cost])
        except (RedisError, OSError) as exc:
            raise RateLimiterUnavailableError(f"rate limiter unavailable: {exc}") from exc
        return Decision(policy, bool(allowed), int(remaining), reset_us / 1e6, retry_us / 1e6)

    async def close(self) -> None:
        await self._redis.aclose()
