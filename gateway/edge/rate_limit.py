"""Rate limits per client and route at the edge, on core.resilience.rate_limit.

The client is the verified token's subject (`user:<sub>`), else its address (`ip:<addr>`,
see gateway.client_address; an IPv6 client by its /64, see `client_key`); the policy is the route's
own, named after the route, so each route has its own quota per client. Tokens that fail
verification are limited per address too (`RefusedTokens`), before the signature check.
With `REDIS_URL` the count is shared by every gateway replica and exact (one round trip,
Redis's clock); while Redis is away each replica limits in-process and says so (`degraded`,
and a warning in the log), rather than refuse or let everything through.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol

from core.config import Settings
from core.resilience import (
    Decision,
    FallbackRateLimiter,
    RateLimiter,
    RateLimitPolicy,
    rate_limiter,
)
from core.security import Principal
from gateway.errors import GatewayError


@lru_cache(maxsize=4096)
def client_key(address: str) -> str:
    """What an anonymous client's quota is kept under: an IPv4 address as it is (an IPv4
    client on a dual-stack socket, `::ffff:a.b.c.d`, too); an IPv6 address by its /64, the
    smallest block a site is given (RFC 6177): a client holding one has 2**64 addresses, and
    keyed per address it would have as many quotas. Anything else (`unknown`) as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LimitedRoute(Protocol):
    """What rate limiting reads of a route (gateway.routes.Route)."""

    @property
    def rate_limit(self) -> RateLimitPolicy | None: ...


class EdgeRateLimiter:
    """One check per request against the route's policy. Safe for concurrent use from one
    event loop; `close()` once, at shutdown."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def check(self, route: LimitedRoute, principal: Principal | None,
                    client_ip: str) -> Decision | None:
        """The decision for this request (its `headers()` go on the response), or None when
        the route is not limited. Raises GatewayError 429 `rate_limited`, with Retry-After
        and the RateLimit headers, when the client's quota for the route is spent."""
        policy = route.rate_limit
        if policy is None:
            return None
        key = (f"user:{principal.subject}" if principal is not None
               else f"ip:{client_key(client_ip)}")
        decision = await self.limiter.hit(key, policy)
        if not decision.allowed:
            headers = decision.headers()
            raise GatewayError(
                429, "rate_limited",
                f"Too many requests: {policy.limit} per {policy.window:g} s on this route; "
                f"retry in {headers['Retry-After']} s", headers)
        return decision

    @property
    def shared(self) -> bool:
        """Limits are meant to be shared through Redis (`REDIS_URL` set)."""
        return isinstance(self.limiter, FallbackRateLimiter)

    @property
    def degraded(self) -> bool:
        """The shared limiter is away and this process decides alone (for /health/ready)."""
        return isinstance(self.limiter, FallbackRateLimiter) and self.limiter.degraded

    async def close(self) -> None:
        await self.limiter.close()

    def refused_tokens(self, policy: RateLimitPolicy | None) -> RefusedTokens | None:
        """A limit on refused tokens per address that counts through this limiter (so through
        Redis when it is shared); None when `policy` is."""
        return None if policy is None else RefusedTokens(self.limiter, policy)


class RefusedTokens:
    """Tokens refused per client address: `policy` of them, then 429 without checking any.

    Checking a token's signature is the costliest step at the edge, and a made-up token costs
    it each time. Each refusal spends a unit of the address's quota (shared through Redis when
    the limiter is); once it is spent, the address is told to wait, and until then this
    process answers its unknown tokens 429 before verifying them (`check`). Tokens already
    verified (the edge's cache) still pass: they cost nothing. One event loop; at most
    `max_clients` addresses are remembered as waiting (the oldest forgotten first).
    """

    def __init__(self, limiter: RateLimiter, policy: RateLimitPolicy, *,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000) -> None:
        self.limiter = limiter
        self.policy = policy
        self._clock = clock
        self._max_clients = max_clients
        self._waiting: OrderedDict[str, float] = OrderedDict()

    def check(self, client_ip: str) -> None:
        """Raise GatewayError 429 while `client_ip` spent its refused tokens."""
        key = client_key(client_ip)
        until = self._waiting.get(key)
        if until is None:
            return
        wait = until - self._clock()
        if wait <= 0:
            del self._waiting[key]
            return
        raise self._refusal(wait)

    async def refused(self, client_ip: str) -> None:
        """Count a refused token from `client_ip`; raise GatewayError 429 when that was one
        too many (else the caller answers its 401)."""
        key = client_key(client_ip)
        decision = await self.limiter.hit(f"refused-token:{key}", self.policy)
        p = self.policy
        # Seconds until a unit is back: when refused, Retry-After; when this spent the last
        # one, the time the bucket takes to give one back.
        wait = (decision.retry_after if not decision.allowed
                else decision.reset_after - p.window + p.interval if decision.remaining == 0
                else 0.0)
        if wait > 0:
            self._waiting[key] = self._clock() + wait
            self._waiting.move_to_end(key)
            if len(self._waiting) > self._max_clients:
                self._waiting.popitem(last=False)
        if not decision.allowed:
            raise self._refusal(decision.retry_after)

    def _refusal(self, wait: float) -> GatewayError:
        seconds = max(1, math.ceil(wait))
        return GatewayError(
            429, "rate_limited",
            f"Too many refused tokens from this address ({self.policy.limit} per "
            f"{self.policy.window:g} s); retry in {seconds} s", {"Retry-After": str(seconds)})


def edge_rate_limiter(settings: Settings) -> EdgeRateLimiter:
    """Through Redis with the in-process fallback when `REDIS_URL` is set, else in-process."""
    return EdgeRateLimiter(rate_limiter(settings))
