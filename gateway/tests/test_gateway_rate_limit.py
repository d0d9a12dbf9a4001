"""Rate limits at the edge, through real gateway processes: a burst over the limit lets exactly
the limit through; two replicas on one Redis share one limit exactly; with Redis stopped the
gateway keeps serving on its in-process limiter, says so in its health, and shares again once
Redis is back."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from devinfra.process import free_port
from devinfra.redis import RedisServer
from gateway.tests.harness import Gateway, Upstream, start_issuer, static_registry
from tests.helpers import IssuerProc, eventually, unique
from tests.helpers.metrics import scrape, value

pytestmark = pytest.mark.redis

LIMIT = 5
ROUTES = f"""
[defaults]
rate_limit = "none"

[[routes]]
name = "limited"
prefix = "/api/limited"
service = "svc"
rewrite = "/limited"
rate_limit = "{LIMIT}/60"

[[routes]]
name = "open"
prefix = "/api/open"
service = "svc"
rewrite = "/open"
public = true
rate_limit = "{LIMIT}/60"
"""


class World:
    def __init__(self, issuer: IssuerProc, replicas: list[Gateway]) -> None:
        self.issuer = issuer
        self.replicas = replicas

    async def burst(self, gateway: Gateway, count: int, token: str,
                    path: str = "/api/limited/x") -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            return await asyncio.gather(*(
                http.get(path, headers={"Authorization": f"Bearer {token}"})
                for _ in range(count)))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(module_spawn: Callable[..., Any], redis: Any,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("gw-limits")
    issuer = await start_issuer(module_spawn, tmp)
    svc = await Upstream("svc", free_port(), module_spawn).start()
    env = {"REGISTRY_STATIC": static_registry({"svc": [svc]}), "JWKS_URL": issuer.jwks_url,
           "REDIS_URL": redis.url}
    replicas = [await Gateway(module_spawn, tmp / f"gw{n}", ROUTES, env).start()
                for n in (1, 2)]
    yield World(issuer, replicas)


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


async def test_a_burst_lets_exactly_the_limit_through(world: World) -> None:
    token = await world.issuer.issue(unique("user"))
    answers = await world.burst(world.replicas[0], LIMIT + 7, token)
    assert statuses(answers) == {200: LIMIT, 429: 7}
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-policy"] == f'"limited";q={LIMIT};w=60'
    assert refused.headers["ratelimit"].startswith('"limited";r=0;')
    allowed = next(a for a in answers if a.status_code == 200)
    assert allowed.headers["ratelimit-policy"] == f'"limited";q={LIMIT};w=60'


async def test_limits_are_per_user(world: World) -> None:
    first = await world.issuer.issue(unique("user"))
    second = await world.issuer.issue(unique("user"))
    assert statuses(await world.burst(world.replicas[0], LIMIT, first)) == {200: LIMIT}
    assert statuses(await world.burst(world.replicas[0], LIMIT, second)) == {200: LIMIT}


async def test_two_replicas_on_one_redis_share_the_limit_exactly(world: World) -> None:
    token = await world.issuer.issue(unique("user"))
    one, two = await asyncio.gather(world.burst(world.replicas[0], LIMIT + 3, token),
                                    world.burst(world.replicas[1], LIMIT + 3, token))
    assert statuses(one + two) == {200: LIMIT, 429: LIMIT + 6}


async def test_anonymous_clients_are_limited_by_address(world: World) -> None:
    """Every request here comes from 127.0.0.1: one bucket for the public route, shared by
    both replicas, whatever X-Forwarded-For a client makes up."""
    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(*(
            http.get(f"{world.replicas[n % 2].url}/api/open/x",
                     headers={"X-Forwarded-For": f"10.0.0.{n}"})
            for n in range(LIMIT + 4)))
    assert statuses(answers) == {200: LIMIT, 429: 4}


async def test_with_redis_stopped_the_gateway_serves_on_its_own_limiter(
        world: World, spawn: Callable[..., Any], tmp_path: Any) -> None:
    own_redis = RedisServer.start(tmp_path / "redis")
    try:
        svc = await Upstream("svc", free_port(), spawn).start()
        gateway = await Gateway(spawn, tmp_path / "gw", ROUTES, {
            "REGISTRY_STATIC": static_registry({"svc": [svc]}),
            "JWKS_URL": world.issuer.jwks_url, "REDIS_URL": own_redis.url}).start()
        token = await world.issuer.issue(unique("user"))
        assert statuses(await world.burst(gateway, 2, token)) == {200: 2}
        own_redis.stop()
        token = await world.issuer.issue(unique("user"))
        answers = await world.burst(gateway, LIMIT + 3, token)
        assert statuses(answers) == {200: LIMIT, 429: 3}  # the local limiter, still exact here
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            ready = await http.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"
            (limiter,) = [c for c in ready.json()["checks"] if c["name"] == "rate_limiter"]
            assert limiter["status"] == "degraded" and "Redis" in limiter["error"]
            assert "unavailable" in gateway.log.read_text()
            own_redis.restart()

            async def shared_again() -> bool:
                await world.burst(gateway, 1, token)
                return bool((await http.get("/health/ready")).json()["status"] == "ready")

            await eventually(shared_again, timeout=20, interval=0.5)
    finally:
        own_redis.close()


async def test_the_gateways_metrics_count_refusals_per_route_and_rule(world: World) -> None:
    """`/metrics` on a gateway replica: 429s per route table entry, refused tokens per rule,
    the JWKS fetch, requests per route prefix (never the raw path)."""
    gateway = world.replicas[1]
    before = await scrape(gateway.url)
    token = await world.issuer.issue(unique("user"))
    assert statuses(await world.burst(gateway, LIMIT + 2, token, f"/api/limited/{unique('p')}")
                    )[429] == 2
    assert statuses(await world.burst(gateway, 1, "not-a-token")) == {401: 1}
    after = await scrape(gateway.url)

    def delta(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0.0) - (value(before, name, **labels) or 0.0)

    assert delta("kfm_rate_limited_requests_total", route="/api/limited") == 2
    assert delta("kfm_token_rejections_total", reason="malformed") == 1
    assert delta("kfm_http_requests_total", route="/api/limited", status="200") == LIMIT
    assert (value(after, "kfm_jwks_refreshes_total", outcome="ok") or 0) >= 1
    assert value(after, "kfm_registry_instances", service_name="svc") == 1
    assert not [line for line in after.splitlines() if "/api/limited/" in line]
