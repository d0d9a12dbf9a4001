"""The gateway as a real process in front of real stand-in upstreams: what it passes on, what
it refuses at the edge (and that the refused never reach a service), bodies, streams, bad
paths and headers, upstream failures, the legacy fallback, and a route table changed live."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from gateway.tests.harness import Gateway, Upstream, start_issuer, static_registry
from tests.helpers import IssuerProc, eventually

ROUTES = """
[defaults]
timeout = 5.0
retries = 1
rate_limit = "none"

[[routes]]
name = "public"
prefix = "/api/public"
service = "echo"
rewrite = "/public"
public = true

[[routes]]
name = "echo"
prefix = "/api/echo"
service = "echo"
rewrite = "/echo"

[[routes]]
name = "admin"
prefix = "/api/admin"
service = "other"
rewrite = "/admin"
permissions = ["things:admin"]

[[routes]]
name = "posts-only"
prefix = "/api/post"
service = "other"
rewrite = "/post"
methods = ["POST"]

[[routes]]
name = "moved"
prefix = "/shop/orders/new"
service = "other"
rewrite = "/orders/new"
public = true

[[routes]]
name = "slow"
prefix = "/api/slow"
service = "echo"
rewrite = "/slow"
timeout = 0.5
retries = 0
"""


class World:
    def __init__(self, issuer: IssuerProc, gateway: Gateway, echo: list[Upstream],
                 other: Upstream, legacy: Upstream) -> None:
        self.issuer, self.gateway = issuer, gateway
        self.echo, self.other, self.legacy = echo, other, legacy

    async def token(self, sub: str = "user-1", permissions: list[str] | None = None) -> str:
        return await self.issuer.issue(sub, permissions=permissions or [])

    async def seen_total(self) -> int:
        counts = [len(await u.seen()) for u in [*self.echo, self.other, self.legacy]]
        return sum(counts)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(module_spawn: Callable[..., Any],
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("gateway")
    issuer = await start_issuer(module_spawn, tmp)
    echo = [await Upstream(f"echo-{n}", _port(), module_spawn).start() for n in (1, 2)]
    other = await Upstream("other", _port(), module_spawn).start()
    legacy = await Upstream("legacy", _port(), module_spawn).start()
    gateway = await Gateway(module_spawn, tmp / "gw", ROUTES, {
        "REGISTRY_STATIC": static_registry({"echo": echo, "other": [other]}),
        "JWKS_URL": issuer.jwks_url, "LEGACY_UPSTREAM_URL": legacy.url,
        "GATEWAY_BUFFER_BYTES": "65536", "GATEWAY_MAX_BODY_BYTES": str(1024 * 1024),
    }).start()
    yield World(issuer, gateway, echo, other, legacy)


def _port() -> int:
    from devinfra.process import free_port

    return free_port()


@pytest_asyncio.fixture(loop_scope="session")
async def http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=world.gateway.url, timeout=30) as client:
        yield client


def header(record: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in record["headers"] if k == name]


async def test_passes_the_request_on_rewritten_with_identity_and_forwarding_headers(
        world: World, http: httpx.AsyncClient) -> None:
    token = await world.token("user-7")
    response = await http.get("/api/echo/things/1?x=1&y=%20z", headers={
        "Authorization": f"Bearer {token}", "X-Request-ID": "req-123",
        "X-Authenticated-Subject": "admin", "X-Forwarded-For": "6.6.6.6",
        "Connection": "keep-alive, x-hop", "X-Hop": "secret", "X-Kept": "yes"})
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["path"] == "/echo/things/1" and seen["query"] == "x=1&y=%20z"
    assert header(seen, "x-authenticated-subject") == ["user-7"]
    assert header(seen, "x-authenticated-kind") == ["user"]
    assert header(seen, "authorization") == [f"Bearer {token}"]
    assert header(seen, "x-forwarded-for") == ["127.0.0.1"]  # the spoofed hop is dropped
    assert header(seen, "x-forwarded-proto") == ["http"]
    assert header(seen, "x-request-id") == ["req-123"]
    assert header(seen, "x-hop") == [] and header(seen, "x-kept") == ["yes"]
    assert response.headers["x-request-id"] == "req-123"
    assert response.headers["x-upstream"].startswith("echo-")
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]


async def test_an_insane_request_id_is_replaced(world: World, http: httpx.AsyncClient) -> None:
    for insane in ("has spaces; and <html>", "x" * 129):
        response = await http.get("/api/public/x", headers={"X-Request-ID": insane})
        assert response.status_code == 200
        made = response.headers["x-request-id"]
        assert made != insane and header(response.json(), "x-request-id") == [made]
    control = await http.get("/api/public/x", headers={"X-Request-ID": "a\x01b"})
    assert control.status_code == 400  # refused by the HTTP parser itself


async def test_refusals_at_the_edge_never_reach_a_service(world: World,
                                                          http: httpx.AsyncClient) -> None:
    before = await world.seen_total()
    missing = await http.get("/api/echo/x")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_token"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    bad = await http.get("/api/echo/x", headers={"Authorization": "Bearer not.a.token"})
    assert bad.status_code == 401 and "invalid_token" in bad.headers["www-authenticate"]
    forged = (await world.token()) + "x"
    assert (await http.get("/api/echo/x", headers={"Authorization": f"Bearer {forged}"})
            ).status_code == 401
    token = await world.token(permissions=["things:read"])
    forbidden = await http.get("/api/admin/x", headers={"Authorization": f"Bearer {token}"})
    assert forbidden.status_code == 403
    assert "things:admin" in forbidden.json()["error"]["message"]
    wrong_method = await http.get("/api/post/x", headers={"Authorization": f"Bearer {token}"})
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert await world.seen_total() == before
    allowed = await world.token(permissions=["things:admin"])
    assert (await http.get("/api/admin/x", headers={"Authorization": f"Bearer {allowed}"})
            ).status_code == 200
    assert await world.seen_total() == before + 1


async def test_a_public_route_ignores_tokens(world: World, http: httpx.AsyncClient) -> None:
    response = await http.post("/api/public/login", json={"a": 1},
                               headers={"Authorization": "Bearer stale"})
    assert response.status_code == 200
    assert header(response.json(), "x-authenticated-subject") == []


async def test_bodies_small_large_chunked_and_too_large(world: World,
                                                        http: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {await world.token()}"}
    small = await http.post("/api/echo/x", content=b'{"a": 1}', headers=auth)
    assert small.json()["body_size"] == 8
    large = await http.put("/api/echo/x", content=b"x" * 300_000, headers=auth)  # streamed
    assert large.status_code == 200 and large.json()["body_size"] == 300_000

    async def chunks(total: int) -> AsyncIterator[bytes]:
        for _ in range(total // 10_000):
            yield b"y" * 10_000

    chunked = await http.post("/api/echo/x", content=chunks(50_000), headers=auth)
    assert chunked.json()["body_size"] == 50_000
    before = await world.seen_total()
    declared = await http.post("/api/echo/x", content=b"z" * (1024 * 1024 + 1), headers=auth)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "body_too_large"
    too_long = await http.post("/api/echo/x", content=chunks(1_100_000), headers=auth)
    assert too_long.status_code == 413
    assert await world.seen_total() == before


async def raw_request(port: int, head: str) -> tuple[int, bytes]:
    """Send a request exactly as written (httpx would normalise the path); the status and
    body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)  # to the end: Connection: close
    finally:
        writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("path", [
    "/api/public/../admin/x", "/api/public/%2e%2e/admin/x", "/api/public/./x",
    "/api/public/a%2Fb", "/api/public/a%5cb", "/api/public//x", "/api/public/a%00b",
])
async def test_ambiguous_paths_are_refused(world: World, path: str) -> None:
    before = await world.seen_total()
    status, body = await raw_request(
        world.gateway.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == "bad_path", body
    assert await world.seen_total() == before


async def test_oversized_or_too_many_headers_get_431(world: World,
                                                     http: httpx.AsyncClient) -> None:
    before = await world.seen_total()
    big = await http.get("/api/public/x", headers={"X-Big": "b" * 20_000})
    assert big.status_code == 431
    many = await http.get("/api/public/x", headers={f"X-H{n}": "1" for n in range(120)})
    assert many.status_code == 431
    assert await world.seen_total() == before


async def test_a_bad_json_body_is_the_services_business(world: World,
                                                        http: httpx.AsyncClient) -> None:
    """The gateway does not parse bodies: the service answers (here the stand-in echoes)."""
    response = await http.post("/api/public/x", content=b"{not json",
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and response.json()["body_size"] == 9


async def test_server_sent_events_stream_through_and_a_leaving_client_frees_them(
        world: World, http: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {await world.token()}"}
    before = sum([(await u.state())["sse_left"] for u in world.echo])
    async with http.stream("GET", "/api/echo/sse?n=200&gap=0.1", headers=auth) as stream:
        assert stream.headers["content-type"] == "text/event-stream"
        events: list[str] = []
        async with asyncio.timeout(10):  # 200 events take 20 s: buffered whole, this fails
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    events.append(line)
                if len(events) == 3:
                    break
    assert events == ["data: 0", "data: 1", "data: 2"]

    async def upstream_saw_it_leave() -> bool:
        return bool(sum([(await u.state())["sse_left"] for u in world.echo]) == before + 1)

    await eventually(upstream_saw_it_leave, timeout=10, interval=0.1)


async def test_upstream_errors_and_timeouts_are_clear(world: World,
                                                      http: httpx.AsyncClient) -> None:
    failed = await http.get("/api/public/status/500")
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "bad_gateway"
    assert "echo" in failed.json()["error"]["message"]
    unavailable = await http.get("/api/public/status/503")
    assert unavailable.status_code == 503 and "retry-after" in unavailable.headers
    refused = await http.get("/api/public/status/404")
    assert refused.status_code == 404  # a 4xx is the service's answer, passed on
    auth = {"Authorization": f"Bearer {await world.token()}"}
    slow = await http.get("/api/slow/slow?s=3", headers=auth)
    assert slow.status_code == 504 and slow.json()["error"]["code"] == "upstream_timeout"


async def test_instances_share_the_load(world: World, http: httpx.AsyncClient) -> None:
    answers = [await http.get("/api/public/x") for _ in range(10)]
    assert {a.headers["x-upstream"] for a in answers} == {"echo-1", "echo-2"}


async def test_what_no_route_matches_goes_to_the_legacy_app(world: World,
                                                             http: httpx.AsyncClient) -> None:
    old = await http.get("/shop/orders/old?id=3")
    assert old.status_code == 200
    assert old.json()["instance"] == "legacy" and old.json()["path"] == "/shop/orders/old"
    moved = await http.post("/shop/orders/new", json={})
    assert moved.json()["instance"] == "other" and moved.json()["path"] == "/orders/new"


async def test_the_gateways_own_paths(world: World, http: httpx.AsyncClient) -> None:
    assert (await http.get("/health/live")).json() == {"status": "alive"}
    ready = await http.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    checks = {c["name"]: c for c in ready.json()["checks"]}
    assert checks["routes"]["detail"] == "6 routes"


async def test_a_changed_route_table_applies_without_a_restart(
        world: World, http: httpx.AsyncClient) -> None:
    table = world.gateway.routes_file
    original = ROUTES

    def write(text: str) -> None:
        table.write_text(text)

    try:
        write(original + '\n[[routes]]\nname = "new"\nprefix = "/api/new"\n'
              'service = "other"\nrewrite = "/fresh"\npublic = true\n')

        async def routed() -> bool:
            return bool((await http.get("/api/new/x")).json()["instance"] == "other")

        await eventually(routed, timeout=10, interval=0.1)
        assert (await http.get("/api/new/x")).json()["path"] == "/fresh/x"
        write(original + "\n[[routes]]\nname = \n")  # broken: the last good table stays
        await asyncio.sleep(1.0)
        assert (await http.get("/api/new/x")).json()["instance"] == "other"
        assert "route table" in world.gateway.log.read_text().lower()
    finally:
        write(original)
    await eventually(lambda: _gone(http), timeout=10, interval=0.1)


async def _gone(http: httpx.AsyncClient) -> bool:
    response = await http.get("/api/new/x")
    return bool(response.json().get("instance") == "legacy")


async def test_a_rotated_signing_key_is_accepted_without_a_restart(
        world: World, http: httpx.AsyncClient) -> None:
    """The issuer signs with a new key: the gateway finds its kid unknown, refetches the JWKS
    (at most once per JWKS_MIN_REFRESH_SECONDS) and accepts the token."""
    kid = (await world.issuer.call("POST", "/rotate"))["kid"]
    token = await world.token("rotated-user")
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"] == kid

    async def accepted() -> bool:
        response = await http.get("/api/echo/x", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code in (200, 401), response.text
        return response.status_code == 200

    await eventually(accepted, timeout=15, interval=0.5)


async def test_an_upstream_dying_mid_answer_is_retried_or_a_clean_502(
        world: World, http: httpx.AsyncClient) -> None:
    """A small answer is read whole before its status goes out, so the client never sees a
    200 that breaks off: an idempotent request goes to the other instance, any other gets a
    502. Only an answer larger than the buffer can still be cut (its status is already out)."""
    for _ in range(4):
        retried = await http.get("/api/public/cut?only=echo-1")
        assert retried.status_code == 200 and retried.headers["x-upstream"] == "echo-2"
        assert retried.json()["path"] == "/public/cut"
    posted = await http.post("/shop/orders/old/cut", content=b"{}")  # legacy: one instance
    assert posted.status_code == 502 and posted.json()["error"]["code"] == "bad_gateway"
    assert "legacy" in posted.json()["error"]["message"]
    with pytest.raises(httpx.RemoteProtocolError):
        await http.get("/shop/orders/old/cut?size=200000")
