"""The gateway's active checks against real HTTP servers (asyncio, on loopback): every instance
gets its whole timeout however many there are, and health alone never empties a service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.tests.ready_servers import servers
from gateway.upstreams import HealthChecker
from tests.fixed_registry import FixedRegistry


@asynccontextmanager
async def checker(urls: list[str], *, timeout: float = 2.0, unhealthy_after: int = 1,
                  ) -> AsyncIterator[tuple[HealthChecker, FixedRegistry]]:
    registry = FixedRegistry({"svc": urls})
    health = HealthChecker(registry, lambda: ["svc"], interval=3600, timeout=timeout,
                           unhealthy_after=unhealthy_after)
    await health.start()
    try:
        yield health, registry
    finally:
        await health.stop()


def count(health: HealthChecker, registry: FixedRegistry) -> int:
    """How many of the service's instances the balancing may pick."""
    return sum(health.healthy(i) for i in registry.services["svc"])


async def test_twenty_slow_instances_each_get_their_whole_timeout() -> None:
    # 1.2 s to answer, 2 s allowed: with 16 connections shared and the wait for one counted,
    # the last 4 got 0.8 s and were taken out every round.
    async with servers(20, delay=1.2) as up, checker([s.url for s in up], timeout=2.0,
                                                      unhealthy_after=1) as (health, registry):
        await health.check_all()
        assert health.unhealthy() == []
        assert count(health, registry) == 20


async def test_a_minority_failing_is_left_out() -> None:
    async with servers(4) as up, checker([s.url for s in up], unhealthy_after=1) as (
            health, registry):
        up[0].ready = False
        await health.check_all()
        out = [i for i in registry.services["svc"] if not health.healthy(i)]
        assert [i.url for i in out] == [up[0].url]
        assert health.panicking() == {}


async def test_most_instances_failing_are_all_balanced_not_all_taken_out() -> None:
    async with servers(4) as up, checker([s.url for s in up], unhealthy_after=1) as (
            health, registry):
        for server in up[:3]:
            server.ready = False
        await health.check_all()
        assert len(health.unhealthy()) == 3  # reported as failing...
        assert count(health, registry) == 4  # ...and still balanced: 1 of 4 is below half
        assert "1 of 4" in health.panicking()["svc"]
        up[0].ready = up[1].ready = True  # 3 of 4 pass: the one failing is left out again
        await health.check_all()
        assert health.panicking() == {}
        assert [i.url for i in registry.services["svc"] if not health.healthy(i)] == [up[2].url]


async def test_every_instance_failing_keeps_every_instance() -> None:
    async with servers(2) as up, checker([s.url for s in up], unhealthy_after=1) as (
            health, registry):
        for server in up:
            server.ready = False
        await health.check_all()
        assert count(health, registry) == 2 and "svc" in health.panicking()
