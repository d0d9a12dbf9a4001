"""The gateway's `/health/ready`: the same checks and body as every service's
(`core.health_check`), made of what the gateway serves with.

Unavailable (503) only while it cannot route: the registry has never been read. Once it has,
the registry being away only degrades it (it routes from the table it kept), as do a shared
rate limiter that is away (limits are per replica meanwhile), no token keys yet (protected
routes answer 503 until they come) and a routed service balanced across all its instances
because too few pass their checks.
"""

from __future__ import annotations

from collections.abc import Callable

from core.health_check import DegradedError, HealthChecks, reached_once
from core.security import Security
from core.service_registry import ServiceRegistry
from gateway.edge.rate_limit import EdgeRateLimiter
from gateway.routes.table import RouteTable
from gateway.upstreams import HealthChecker


def gateway_readiness(registry: ServiceRegistry, table: Callable[[], RouteTable],
                      limiter: EdgeRateLimiter, upstreams: HealthChecker,
                      security: Security | None) -> HealthChecks:
    health = HealthChecks()
    health.add("registry", reached_once(registry.check))

    async def routes() -> str:
        return f"{len(table())} routes"

    async def rate_limiter() -> None:
        if limiter.degraded:
            raise DegradedError("the shared limiter (Redis) is unavailable: each replica limits "
                                "alone meanwhile")

    async def balancing() -> str | None:
        panicking = upstreams.panicking()
        if panicking:
            raise DegradedError("; ".join(f"{service}: {why}"
                                          for service, why in sorted(panicking.items())))
        out = upstreams.unhealthy()
        return f"taken out: {', '.join(out)}" if out else None

    health.add("routes", routes)
    health.add("rate_limiter", rate_limiter)
    health.add("upstreams", balancing)
    jwks = security.jwks if security is not None else None
    if jwks is not None:
        async def token_keys() -> str:
            if not jwks.keys:
                raise DegradedError("no token keys read yet: protected routes answer 503 until "
                                    "they are")
            return f"{len(jwks.keys)} keys"

        health.add("token_keys", token_keys)
    return health
