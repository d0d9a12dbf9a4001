"""Rate limits per client and route at the edge, on core.resilience.rate_limit.

The client is the verified token's subject (`user:<sub>`), else its address (`ip:<addr>`,
see gateway.clients); the policy is the route's own, named after the route, so each route
has its own quota per client. With `REDIS_URL` the count is shared by every gateway replica
and exact (one round trip, Redis's clock); while Redis is away each replica limits
in-process and says so (`degraded`, and a warning in the log), rather than refuse or let
everything through.
"""

from __future__ import annotations

from typing import Protocol

from core.config import Settings
from core.resilience.rate_limit import (
    Decision,
    FallbackRateLimiter,
    RateLimiter,
    RateLimitPolicy,
    rate_limiter,
)
from core.security.types import Principal
from gateway.errors import GatewayError


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
        key = f"user:{principal.subject}" if principal is not None else f"ip:{client_ip}"
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


def edge_rate_limiter(settings: Settings) -> EdgeRateLimiter:
    """Through Redis with the in-process fallback when `REDIS_URL` is set, else in-process."""
    return EdgeRateLimiter(rate_limiter(settings))
