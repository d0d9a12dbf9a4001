"""Per-client limits that a client could dodge, through the real gateway process: tokens that
fail verification are limited per address (guessing is not free), and IPv6 clients are one
client per /64 (a client with a /64 does not get 2**64 quotas). Clients are told apart by
`X-Forwarded-For` from a trusted proxy (the test, on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from devinfra.process import free_port
from gateway.tests.harness import Gateway, Upstream, start_issuer, static_registry
from tests.helpers import IssuerProc

ROUTES = """
[defaults]
rate_limit = "none"

[[routes]]
name = "echo"
prefix = "/api/echo"
service = "echo"
rewrite = "/echo"

[[routes]]
name = "anon"
prefix = "/api/anon"
service = "echo"
rewrite = "/anon"
public = true
rate_limit = "2/600"
"""
REFUSED_LIMIT = 5


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(module_spawn: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory,
                ) -> AsyncIterator[tuple[IssuerProc, Gateway, Upstream]]:
    tmp = tmp_path_factory.mktemp("limits")
    issuer = await start_issuer(module_spawn, tmp)
    echo = await Upstream("echo", free_port(), module_spawn).start()
    gateway = await Gateway(module_spawn, tmp / "gw", ROUTES, {
        "REGISTRY_STATIC": static_registry({"echo": [echo]}), "JWKS_URL": issuer.jwks_url,
        "GATEWAY_TRUSTED_PROXIES": '["127.0.0.1"]',
        "GATEWAY_REFUSED_TOKEN_RATE_LIMIT": f"{REFUSED_LIMIT}/600"}).start()
    yield issuer, gateway, echo


@pytest_asyncio.fixture(loop_scope="session")
async def http(world: tuple[IssuerProc, Gateway, Upstream]
               ) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=world[1].url, timeout=30) as client:
        yield client


def client(address: str, token: str | None = None) -> dict[str, str]:
    headers = {"X-Forwarded-For": address}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def test_refused_tokens_are_limited_per_address(
        world: tuple[IssuerProc, Gateway, Upstream], http: httpx.AsyncClient) -> None:
    issuer, _, echo = world
    forged = (await issuer.issue("user-1", permissions=[])) + "x"
    guesser = [await http.get("/api/echo/x", headers=client("198.51.100.1", forged))
               for _ in range(REFUSED_LIMIT + 3)]
    assert [r.status_code for r in guesser] == [401] * REFUSED_LIMIT + [429] * 3
    assert guesser[-1].json()["error"]["code"] == "rate_limited"
    assert 0 < int(guesser[-1].headers["retry-after"]) <= 600 / REFUSED_LIMIT
    # Another IPv4 address is another client; all of an IPv6 /64 is one.
    neighbour = await http.get("/api/echo/x", headers=client("198.51.100.2", forged))
    assert neighbour.status_code == 401
    v6 = [await http.get("/api/echo/x", headers=client(f"2001:db8:7:7::{n}", forged))
          for n in range(1, REFUSED_LIMIT + 2)]
    assert [r.status_code for r in v6] == [401] * REFUSED_LIMIT + [429]
    good = await issuer.issue("user-2", permissions=[])
    served = await http.get("/api/echo/x", headers=client("198.51.100.2", good))
    assert served.status_code == 200, served.text
    assert [r["path"] for r in await echo.seen()].count("/echo/x") == 1


async def test_anonymous_ipv6_clients_are_limited_per_64(
        world: tuple[IssuerProc, Gateway, Upstream], http: httpx.AsyncClient) -> None:
    async def status(address: str) -> int:
        return (await http.get("/api/anon/x", headers=client(address))).status_code

    assert [await status("2001:db8:1:2::1"), await status("2001:db8:1:2:ffff::9")] == [200, 200]
    assert await status("2001:db8:1:2:abcd:1:2:3") == 429, "the same /64: the same client"
    assert await status("2001:db8:1:3::1") == 200, "the next /64 is another client"
    assert [await status("198.51.100.7"), await status("::ffff:198.51.100.7")] == [200, 200]
    assert await status("198.51.100.7") == 429, "IPv4-mapped IPv6 is the IPv4 client"
    assert await status("198.51.100.8") == 200, "IPv4 clients are one address each"
