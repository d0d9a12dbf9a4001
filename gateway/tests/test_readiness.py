"""The gateway's own readiness: unavailable only until the registry has been read once; after
that, what it rides out (the registry log, Redis, the token keys, a service balanced across all
its instances) degrades it, naming the check and why."""

from __future__ import annotations

from core.security import security_from_settings
from core.service_registry import RegistryError
from gateway.config import GatewaySettings
from gateway.edge.rate_limit import edge_rate_limiter
from gateway.readiness import gateway_readiness
from gateway.routes.table import Route, RouteTable
from gateway.tests.ready_servers import servers
from gateway.upstreams import HealthChecker
from tests.fixed_registry import FixedRegistry

SETTINGS = GatewaySettings(_env_file=None)
TABLE = RouteTable([Route("svc", "/api/svc", "svc")])


class FlakyRegistry(FixedRegistry):
    """Its `check` raises the next of `errors` (None: passes), then passes."""

    def __init__(self, urls: list[str], errors: list[str | None]) -> None:
        super().__init__({"svc": urls})
        self.errors = errors

    async def check(self) -> None:
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise RegistryError(error)


async def test_unavailable_until_the_registry_is_read_then_degraded_while_it_is_away() -> None:
    registry = FlakyRegistry([], ["not caught up", None, "the registry log is out of reach"])
    health = gateway_readiness(registry, lambda: TABLE, edge_rate_limiter(SETTINGS),
                               HealthChecker(registry, lambda: ["svc"]), None)
    first, second, third = [await health.run() for _ in range(3)]
    assert first.status == "unavailable"
    assert second.status == "ready"
    by_name = {c.name: c for c in second.checks}
    assert by_name["routes"].detail == "1 routes" and by_name["upstreams"].detail is None
    assert third.status == "degraded"
    (registry_check,) = [c for c in third.checks if c.name == "registry"]
    assert registry_check.status == "degraded" and "out of reach" in str(registry_check.error)


async def test_no_token_keys_yet_degrades() -> None:
    registry = FlakyRegistry([], [])
    security = security_from_settings(SETTINGS.model_copy(
        update={"jwks_url": "http://127.0.0.1:9/.well-known/jwks.json"}))
    assert security is not None and security.jwks is not None
    health = gateway_readiness(registry, lambda: TABLE, edge_rate_limiter(SETTINGS),
                               HealthChecker(registry, lambda: ["svc"]), security)
    report = await health.run()
    assert report.status == "degraded"
    (keys,) = [c for c in report.checks if c.name == "token_keys"]
    assert keys.status == "degraded" and "no token keys" in str(keys.error)
    await security.stop()


async def test_instances_taken_out_are_named_and_a_service_balanced_across_all_degrades(
        ) -> None:
    async with servers(3) as up:
        registry = FlakyRegistry([s.url for s in up], [])
        checker = HealthChecker(registry, lambda: ["svc"], unhealthy_after=1)
        health = gateway_readiness(registry, lambda: TABLE, edge_rate_limiter(SETTINGS),
                                   checker, None)
        await checker.start()
        try:
            up[0].ready = False
            await checker.check_all()
            report = await health.run()
            (upstreams,) = [c for c in report.checks if c.name == "upstreams"]
            assert report.status == "ready" and up[0].url in str(upstreams.detail)
            up[1].ready = False
            await checker.check_all()
            report = await health.run()
            (upstreams,) = [c for c in report.checks if c.name == "upstreams"]
            assert report.status == "degraded" and "svc: 1 of 3" in str(upstreams.error)
        finally:
            await checker.stop()
