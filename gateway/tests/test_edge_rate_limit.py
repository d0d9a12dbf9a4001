"""Rate limits at the edge, in-process and on a real Redis: the exact burst, one quota per
client and route, the draft's headers on every answer, one limit shared by two gateway
replicas, and a Redis that goes away (the local limiter decides, and says so) and comes back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from core.config import Settings
from core.resilience import (
    Decision,
    FallbackRateLimiter,
    LocalRateLimiter,
    RateLimiter,
    RateLimitPolicy,
    RedisRateLimiter,
)
from core.security import Principal
from devinfra.redis import RedisServer
from gateway.edge.rate_limit import (
    EdgeRateLimiter,
    RefusedTokens,
    client_key,
    edge_rate_limiter,
)
from gateway.errors import GatewayError
from tests.helpers import eventually, unique


@dataclass(frozen=True, slots=True)
class Route:
    """The part of gateway.routes.Route that rate limiting reads."""

    name: str
    rate_limit: RateLimitPolicy | None


def route(limit: int = 3, window: float = 60) -> Route:
    name = unique("route")
    return Route(name, RateLimitPolicy(name, limit, window))


ALICE = Principal(subject="alice", kind="user")
BOB = Principal(subject="bob", kind="user")
IP = "198.51.100.9"


def shared_limiter(url: str, *, timeout: float = 5.0) -> RedisRateLimiter:
    # A generous timeout where the counts are the point: a loaded machine can take longer
    # than the production default (0.25 s) to open a burst of connections.
    return RedisRateLimiter(url, prefix=unique("edge"), timeout=timeout)


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
async def edge(request: pytest.FixtureRequest) -> AsyncIterator[EdgeRateLimiter]:
    limiter: RateLimiter = (shared_limiter(request.getfixturevalue("redis").url)
                            if request.param == "redis" else LocalRateLimiter())
    made = EdgeRateLimiter(limiter)
    yield made
    await made.close()


async def outcome(edge: EdgeRateLimiter, r: Route, principal: Principal | None = None,
                  ip: str = IP) -> Decision | GatewayError:
    try:
        decision = await edge.check(r, principal, ip)
    except GatewayError as refused:
        return refused
    assert decision is not None
    return decision


def allowed(outcomes: list[Decision | GatewayError]) -> int:
    return sum(isinstance(o, Decision) for o in outcomes)


async def test_a_burst_over_the_limit_lets_exactly_the_limit_through(
    edge: EdgeRateLimiter,
) -> None:
    ten = route(10)
    outcomes = await asyncio.gather(*(outcome(edge, ten, ALICE) for _ in range(15)))
    assert allowed(outcomes) == 10
    refusals = [o for o in outcomes if isinstance(o, GatewayError)]
    assert {(r.status, r.code) for r in refusals} == {(429, "rate_limited")}


async def test_users_addresses_and_routes_each_have_their_own_quota(
    edge: EdgeRateLimiter,
) -> None:
    one, other = route(1), route(1)
    assert isinstance(await outcome(edge, one, ALICE), Decision)
    assert isinstance(await outcome(edge, one, ALICE, ip="203.0.113.1"), GatewayError), (
        "a user is one client wherever they come from")
    assert isinstance(await outcome(edge, one, BOB), Decision), "another user"
    assert isinstance(await outcome(edge, other, ALICE), Decision), "another route"
    assert isinstance(await outcome(edge, one, None), Decision), (
        "an anonymous request from alice's address is not alice")
    assert isinstance(await outcome(edge, one, None), GatewayError)
    assert isinstance(await outcome(edge, one, None, ip="203.0.113.1"), Decision)
    assert isinstance(await outcome(edge, one, Principal(subject=IP, kind="user")), Decision), (
        "a subject that looks like an address is still a user's key, not the address's")


async def test_headers_on_allow_and_on_refusal_follow_the_ietf_draft(
    edge: EdgeRateLimiter,
) -> None:
    r = route(2, 10)
    first = await outcome(edge, r, ALICE)
    assert isinstance(first, Decision)
    assert first.headers() == {"RateLimit-Policy": f'"{r.name}";q=2;w=10',
                               "RateLimit": f'"{r.name}";r=1;t=5'}
    await outcome(edge, r, ALICE)
    refused = await outcome(edge, r, ALICE)
    assert isinstance(refused, GatewayError)
    assert refused.headers == {"RateLimit-Policy": f'"{r.name}";q=2;w=10',
                               "RateLimit": f'"{r.name}";r=0;t=10', "Retry-After": "5"}
    assert refused.message == "Too many requests: 2 per 10 s on this route; retry in 5 s"


class Untouchable:
    async def hit(self, key: str, policy: RateLimitPolicy, cost: int = 1) -> Decision:
        raise AssertionError("an unlimited route must not cost a check")

    async def close(self) -> None:
        pass


async def test_a_route_without_a_policy_is_not_checked() -> None:
    assert await EdgeRateLimiter(Untouchable()).check(Route("free", None), ALICE, IP) is None


async def test_in_process_only_is_neither_shared_nor_degraded() -> None:
    edge = edge_rate_limiter(Settings(redis_url=None))
    assert isinstance(edge.limiter, LocalRateLimiter)
    assert not edge.shared and not edge.degraded
    await edge.close()


async def test_with_redis_url_limits_are_shared_with_a_local_fallback() -> None:
    edge = edge_rate_limiter(Settings(redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(edge.limiter, FallbackRateLimiter)
    assert isinstance(edge.limiter.fallback, LocalRateLimiter)
    assert edge.shared and not edge.degraded
    await edge.close()


@pytest.mark.redis
async def test_two_gateway_replicas_on_one_redis_share_one_exact_limit(redis: Any) -> None:
    prefix, ten = unique("edge"), route(10)
    replicas = [EdgeRateLimiter(RedisRateLimiter(redis.url, prefix=prefix, timeout=5.0))
                for _ in range(2)]
    try:
        outcomes = await asyncio.gather(
            *(outcome(replicas[i % 2], ten, ALICE) for i in range(15)))
        assert allowed(outcomes) == 10
        assert allowed([await outcome(replicas[0], ten, BOB) for _ in range(6)]) == 6
        assert allowed([await outcome(replicas[1], ten, BOB) for _ in range(5)]) == 4
    finally:
        for replica in replicas:
            await replica.close()


@pytest.mark.redis
async def test_while_redis_is_away_the_edge_limits_locally_and_says_so_then_shares_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await asyncio.to_thread(RedisServer.start)
    prefix = unique("edge")
    edge = EdgeRateLimiter(FallbackRateLimiter(
        RedisRateLimiter(server.url, prefix=prefix, timeout=0.5), LocalRateLimiter(),
        cooldown=0.2))
    other = EdgeRateLimiter(RedisRateLimiter(server.url, prefix=prefix, timeout=5.0))
    three, plenty = route(3), route(1000)
    try:
        assert isinstance(await outcome(edge, three, ALICE), Decision)
        assert not edge.degraded
        await asyncio.to_thread(server.stop)
        caplog.set_level(logging.WARNING, logger="core.resilience.rate_limit")

        during = [await outcome(edge, three, ALICE) for _ in range(4)]
        assert edge.degraded
        assert allowed(during) == 3, "still limiting (the local quota starts full)"
        assert "shared rate limiter unavailable" in caplog.text

        await asyncio.to_thread(server.restart)

        async def shared_again() -> bool:
            await outcome(edge, plenty, ALICE)
            return not edge.degraded

        await eventually(shared_again, timeout=10)
        assert "limits are shared again" in caplog.text
        # Redis restarted empty; both replicas now spend from its one quota.
        spent = [await outcome(r, three, BOB) for r in (edge, other, edge, other)]
        assert allowed(spent) == 3, "one shared quota again, not one per replica"
    finally:
        await edge.close()
        await other.close()
        await asyncio.to_thread(server.close)


@pytest.mark.parametrize(("address", "key"), [
    ("198.51.100.9", "198.51.100.9"),
    ("::ffff:198.51.100.9", "198.51.100.9"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
    ("::1", "::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("unknown", "unknown"),
])
def test_clients_are_keyed_by_ipv4_address_or_ipv6_64(address: str, key: str) -> None:
    assert client_key(address) == key


async def test_an_anonymous_ipv6_client_has_one_quota_for_its_whole_64(
    edge: EdgeRateLimiter,
) -> None:
    two = route(2)
    addresses = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff"]
    assert [isinstance(await outcome(edge, two, None, ip=a), Decision)
            for a in addresses] == [True, True, False]
    assert isinstance(await outcome(edge, two, None, ip="2001:db8:1:3::1"), Decision)
    assert isinstance(await outcome(edge, two, ALICE, ip="2001:db8:1:2::9"), Decision), (
        "a user is keyed by who they are, not where")
    assert isinstance(await outcome(edge, two, None, ip="::ffff:198.51.100.20"), Decision)
    assert isinstance(await outcome(edge, two, None, ip="198.51.100.20"), Decision)
    assert isinstance(await outcome(edge, two, None, ip="198.51.100.20"), GatewayError)


@pytest.mark.redis
async def test_refused_tokens_are_counted_once_for_every_replica(redis: Any) -> None:
    prefix, policy = unique("edge"), RateLimitPolicy(unique("refused"), 4, 60)
    replicas = [EdgeRateLimiter(RedisRateLimiter(redis.url, prefix=prefix, timeout=5.0))
                for _ in range(2)]
    guards = [r.refused_tokens(policy) for r in replicas]
    assert replicas[0].refused_tokens(None) is None
    outcomes: list[str] = []
    try:
        for n in range(6):
            guard = guards[n % 2]
            assert guard is not None
            try:
                guard.check("2001:db8::1")
                await guard.refused(f"2001:db8::{n + 1}")
                outcomes.append("401")
            except GatewayError as refused:
                outcomes.append(str(refused.status))
        assert outcomes == ["401"] * 4 + ["429"] * 2
    finally:
        for replica in replicas:
            await replica.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusing(limit: int = 3, window: float = 30, max_clients: int = 100,
             ) -> tuple[RefusedTokens, FakeClock]:
    clock = FakeClock()
    return RefusedTokens(LocalRateLimiter(clock=clock), RateLimitPolicy("refused", limit, window),
                         clock=clock, max_clients=max_clients), clock


async def refused_status(guard: RefusedTokens, ip: str = IP) -> int:
    """What the edge answers a token from `ip` that will fail verification."""
    try:
        guard.check(ip)
        await guard.refused(ip)
    except GatewayError as refusal:
        return refusal.status
    return 401


async def test_refused_tokens_wait_exactly_until_one_comes_back() -> None:
    guard, clock = refusing(limit=3, window=30)  # one back every 10 s
    assert [await refused_status(guard) for _ in range(4)] == [401, 401, 401, 429]
    with pytest.raises(GatewayError) as waiting:
        guard.check(IP)
    assert (waiting.value.status, waiting.value.code) == (429, "rate_limited")
    assert waiting.value.headers == {"Retry-After": "10"}
    assert waiting.value.message == ("Too many refused tokens from this address (3 per 30 s); "
                                     "retry in 10 s")
    clock.now += 9.5
    with pytest.raises(GatewayError) as waiting:
        guard.check(IP)
    assert waiting.value.headers == {"Retry-After": "1"}  # rounded up
    clock.now += 0.5
    guard.check(IP)  # exactly when a refusal is back
    assert await refused_status(guard) == 401
    assert await refused_status(guard) == 429


async def test_refusals_with_some_left_do_not_make_an_address_wait() -> None:
    guard, clock = refusing(limit=3, window=30)
    assert [await refused_status(guard) for _ in range(2)] == [401, 401]
    guard.check(IP)
    clock.now += 10  # one back: two left again
    assert [await refused_status(guard) for _ in range(3)] == [401, 401, 429]


async def test_a_refusal_that_spends_the_last_one_makes_the_next_wait_unverified() -> None:
    guard, _ = refusing(limit=1, window=60)
    assert await refused_status(guard) == 401
    with pytest.raises(GatewayError) as waiting:
        guard.check(IP)  # before any verification
    assert waiting.value.headers == {"Retry-After": "60"}
    assert await refused_status(guard, "::ffff:" + IP) == 429, "the same IPv4 client"
    assert await refused_status(guard, "203.0.113.5") == 401


async def test_a_refusal_over_the_limit_is_429_even_where_this_replica_did_not_know() -> None:
    clock = FakeClock()
    shared = LocalRateLimiter(clock=clock)  # stands for Redis: one count, two replicas
    policy = RateLimitPolicy("refused", 2, 60)
    one, two = (RefusedTokens(shared, policy, clock=clock) for _ in range(2))
    assert [await refused_status(one), await refused_status(one)] == [401, 401]
    two.check(IP)  # this replica has not seen the address spend its refusals...
    with pytest.raises(GatewayError) as refused:
        await two.refused(IP)  # ...but the shared count has
    assert refused.value.headers == {"Retry-After": "30"}
    with pytest.raises(GatewayError):
        two.check(IP)  # and now it knows


async def test_waiting_addresses_are_bounded_oldest_forgotten_first() -> None:
    guard, _ = refusing(limit=1, max_clients=2)
    for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        assert await refused_status(guard, ip) == 401
    guard.check("203.0.113.1")  # forgotten (the oldest): let through to be verified
    for ip in ("203.0.113.2", "203.0.113.3"):
        with pytest.raises(GatewayError):
            guard.check(ip)


def test_refused_tokens_count_through_the_edges_limiter_or_not_at_all() -> None:
    limiter = LocalRateLimiter()
    edge = EdgeRateLimiter(limiter)
    assert edge.refused_tokens(None) is None
    policy = RateLimitPolicy("refused-tokens", 20, 60)
    refused = edge.refused_tokens(policy)
    assert isinstance(refused, RefusedTokens)
    assert refused.limiter is limiter and refused.policy is policy
