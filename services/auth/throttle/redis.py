"""Failure counts in Redis: one hash per key, updated by one script, expiring by itself."""

from __future__ import annotations

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from services.auth.throttle.base import ThrottleUnavailableError
from services.auth.throttle.policy import FailureState, ThrottlePolicy

# The same rule as policy.after_failure, in one atomic step. Times are the caller's clock
# (seconds); they go back as text, since Redis would truncate a Lua number to an integer.
_RECORD = """
local got = redis.call('HMGET', KEYS[1], 'f', 's', 'l')
local now = tonumber(ARGV[1])
local window, lock_after, lock = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local f, s, l = tonumber(got[1]), tonumber(got[2]), tonumber(got[3])
local fresh = f == nil or s == nil or l == nil
if not fresh then
  if f >= lock_after then fresh = now >= l + lock else fresh = now - s > window end
end
if fresh then f = 1; s = now else f = f + 1 end
local start, last = string.format('%.6f', s), string.format('%.6f', now)
redis.call('HSET', KEYS[1], 'f', f, 's', start, 'l', last)
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[5]) * 1000))
return {f, start, last}
"""


class RedisFailureStore:
    """Keys are `<prefix>:<key>`, hashes of failures, window start and last failure; each
    expires `policy.ttl_seconds` after its last failure, so idle keys cost nothing."""

    def __init__(self, url: str, *, prefix: str = "auth", timeout: float = 1.0) -> None:
        self._redis = aioredis.Redis.from_url(url, socket_timeout=timeout,
                                              socket_connect_timeout=timeout)
        self._script = self._redis.register_script(_RECORD)
        self._prefix = prefix

    async def load(self, key: str, policy: ThrottlePolicy) -> FailureState | None:
        try:
            failures, start, last = await self._redis.hmget(f"{self._prefix}:{key}",
                                                            ["f", "s", "l"])
        except (RedisError, OSError) as e:
            raise ThrottleUnavailableError() from e
        if failures is None or start is None or last is None:
            return None
        return FailureState(int(failures), float(start), float(last))

    async def record(self, key: str, policy: ThrottlePolicy, now: float) -> FailureState:
        try:
            failures, start, last = await self._script(
                keys=[f"{self._prefix}:{key}"],
                args=[repr(now), policy.window_seconds, policy.lock_after, policy.lock_seconds,
                      policy.ttl_seconds])
        except (RedisError, OSError) as e:
            raise ThrottleUnavailableError() from e
        return FailureState(int(failures), float(start), float(last))

    async def reset(self, key: str) -> None:
        try:
            await self._redis.delete(f"{self._prefix}:{key}")
        except (RedisError, OSError) as e:
            raise ThrottleUnavailableError() from e

    async def close(self) -> None:
        await self._redis.aclose()
