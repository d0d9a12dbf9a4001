"""What one client's connections may cost the gateway and the services, with real processes:
request heads bounded in size and time (431, 408) by the server before they are parsed, a 413
that reaches a client sending its whole body first (lingering close), streams capped per
client and kept out of the bulkhead short requests share, stalled or abandoned streams freed,
and redirects that never show a client an internal address."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from devinfra.process import free_port
from gateway.tests.harness import Gateway, Upstream, start_issuer, static_registry
from tests.helpers import IssuerProc, eventually

HEAD_TIMEOUT = 1.0
ROUTES = """
[defaults]
timeout = 5.0
retries = 0
rate_limit = "none"

[[routes]]
name = "public"
prefix = "/api/public"
service = "echo"
rewrite = "/public"
public = true
idle_timeout = 1.0
max_client_streams = 2

[[routes]]
name = "streams"
prefix = "/api/streams"
service = "echo"
rewrite = "/streams"
max_client_streams = 4
max_streams = 6

[[routes]]
name = "many"
prefix = "/api/many"
service = "echo"
rewrite = "/many"
max_client_streams = 1000
max_streams = 1000
"""


class World:
    def __init__(self, issuer: IssuerProc, gateway: Gateway, echo: Upstream) -> None:
        self.issuer, self.gateway, self.echo = issuer, gateway, echo

    async def auth(self, sub: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.issuer.issue(sub, permissions=[])}"}


async def _upstream(spawn: Callable[..., Any], name: str) -> Upstream:
    """The stand-in, served as services are (core.serving), with a short head timeout."""
    upstream = Upstream(name, free_port(), spawn)
    upstream.proc = spawn("gateway.tests.procs.upstream", str(upstream.port), name,
                          env={"HEAD_TIMEOUT": str(HEAD_TIMEOUT)})
    await eventually(upstream._answers, timeout=30, interval=0.1)
    return upstream


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(module_spawn: Callable[..., Any],
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("gateway-connections")
    issuer = await start_issuer(module_spawn, tmp)
    echo = await _upstream(module_spawn, "echo")
    gateway = await Gateway(module_spawn, tmp / "gw", ROUTES, {
        "REGISTRY_STATIC": static_registry({"echo": [echo]}), "JWKS_URL": issuer.jwks_url,
        "GATEWAY_BUFFER_BYTES": "65536", "GATEWAY_MAX_BODY_BYTES": str(1024 * 1024),
        "GATEWAY_HEAD_TIMEOUT": str(HEAD_TIMEOUT),
    }).start()
    yield World(issuer, gateway, echo)


@pytest_asyncio.fixture(loop_scope="session")
async def http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=world.gateway.url, timeout=30) as client:
        yield client


def rss(pid: int) -> int:
    """The process's resident memory, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _pid(proc: Any) -> int:
    assert proc is not None
    return int(proc.pid)


async def _answer(reader: asyncio.StreamReader, timeout: float) -> tuple[int, bytes]:
    """The status and body of the answer that ends the connection."""
    data = await asyncio.wait_for(reader.read(), timeout)
    assert data, "closed without an answer"
    return int(data.split(b" ", 2)[1]), data.split(b"\r\n\r\n", 1)[1]


# --- request heads (the gateway, and the stand-in served as every service is) ----------------

@pytest.mark.parametrize("server", ["gateway", "service"])
async def test_a_huge_head_gets_431_fast_with_bounded_memory(world: World, server: str) -> None:
    """64 MB of one header value: uvicorn's httptools parser alone copied it as it grew
    (6.7 s of CPU) and held it all before the app could answer 431."""
    port, proc = ((world.gateway.port, world.gateway.proc) if server == "gateway"
                  else (world.echo.port, world.echo.proc))
    before = rss(_pid(proc))
    head = b"GET /api/public/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 << 20) + b"\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(head)
    del head
    try:
        status, body = await _answer(reader, 30)
        took = time.monotonic() - started
        grew = rss(_pid(proc)) - before
    finally:
        writer.transport.abort()
    assert status == 431, body
    assert json.loads(body)["error"]["code"] == "head_too_large"
    assert took < 2.0, f"431 after {took:.2f} s"
    assert grew < 16 << 20, f"the server grew by {grew >> 20} MiB"


@pytest.mark.parametrize("server", ["gateway", "service"])
async def test_half_sent_heads_are_closed_after_the_head_timeout(world: World,
                                                                 server: str) -> None:
    """Slowloris: 40 connections that each send half a head, and a silent one."""
    port = world.gateway.port if server == "gateway" else world.echo.port
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(41)]
    started = time.monotonic()
    for _, writer in connections[1:]:
        writer.write(b"GET /api/public/x HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    try:
        answers = await asyncio.gather(*(reader.read() for reader, _ in connections))
        took = time.monotonic() - started
    finally:
        for _, writer in connections:
            writer.transport.abort()
    assert took < HEAD_TIMEOUT + 2.0, f"closed after {took:.2f} s"
    assert answers[0] == b""  # never said anything: closed without a word
    assert {answer.split(b" ", 2)[1] for answer in answers[1:]} == {b"408"}


async def test_a_too_large_body_gets_its_413_though_the_client_sends_it_all_first(
        world: World) -> None:
    """urllib sends the whole body before it reads (and says `Connection: close`): closed at
    once, the unread body made the kernel answer with a reset instead of the 413."""
    def post() -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(f"{world.gateway.url}/api/public/x", method="POST",
                                         data=b"x" * (20 << 20))
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, {}
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read())

    status, body = await asyncio.to_thread(post)
    assert status == 413 and body["error"]["code"] == "body_too_large"


# --- streams ---------------------------------------------------------------------------------

async def _open_stream(port: int, path: str, auth: dict[str, str]) -> tuple[
        int, asyncio.StreamReader, asyncio.StreamWriter]:
    """A request whose answer is left unread after its status line (an event stream held
    open); the status, and the connection to close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    header = "".join(f"{k}: {v}\r\n" for k, v in auth.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{header}\r\n".encode())
    line = await asyncio.wait_for(reader.readline(), 30)
    return int(line.split(b" ", 2)[1]), reader, writer


async def test_streams_are_capped_per_client_and_per_route(world: World,
                                                           http: httpx.AsyncClient) -> None:
    port, path = world.gateway.port, "/api/streams/sse?n=1000&gap=1"
    alice, carol = await world.auth("alice"), await world.auth("carol")
    held: list[asyncio.StreamWriter] = []
    try:
        opened = [await _open_stream(port, path, alice) for _ in range(5)]
        held += [writer for _, _, writer in opened]
        assert [status for status, _, _ in opened] == [200, 200, 200, 200, 429]
        head = (await opened[4][1].readuntil(b"\r\n\r\n")).lower()
        assert b"retry-after: 1" in head
        length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        refusal = json.loads(await opened[4][1].readexactly(length))
        assert refusal["error"]["code"] == "too_many_streams", refusal
        theirs = [await _open_stream(port, path, carol) for _ in range(3)]
        held += [writer for _, _, writer in theirs]
        assert [status for status, _, _ in theirs] == [200, 200, 503]  # 6 on the route
        bob = await http.get("/api/streams/x", headers=await world.auth("bob"))
        assert bob.status_code == 200  # not a stream: no cap
    finally:
        for writer in held:
            writer.close()

    async def reopened() -> bool:  # closed streams are given back: alice may open more
        status, _, writer = await _open_stream(port, path, alice)
        writer.close()
        return status == 200

    await eventually(reopened, timeout=10)


async def test_one_clients_many_streams_leave_the_services_slots_to_others(
        world: World, http: httpx.AsyncClient) -> None:
    """520 event streams from one user (the bulkhead of a service has 512 slots, and held
    them all for as long as the streams lasted: every other user's call got 503)."""
    alice = await world.auth("alice")
    held: list[asyncio.StreamWriter] = []
    try:
        for batch in range(13):
            opened = await asyncio.gather(*(_open_stream(
                world.gateway.port, "/api/many/sse?n=1000&gap=5", alice) for _ in range(40)))
            held += [writer for _, _, writer in opened]
            assert {status for status, _, _ in opened} == {200}, f"batch {batch}"
        started = time.monotonic()
        bob = await http.get("/api/public/x", headers=await world.auth("bob"))
        took = time.monotonic() - started
    finally:
        for writer in held:
            writer.close()
    assert bob.status_code == 200, bob.text
    assert took < 2.0


def _stalled(world: World, count: int) -> Callable[[], Any]:
    """A check that exactly `count` stalled answers are held open upstream."""
    async def check() -> bool:
        return bool((await world.echo.state())["stalled"] == count)
    return check


async def test_a_stalled_upstream_body_is_ended_after_the_routes_idle_timeout(
        world: World, http: httpx.AsyncClient) -> None:
    """A 1 MB answer (over the buffer: streamed) of which the upstream sends 1000 bytes and
    then nothing: it held the request, the upstream connection and a slot for ever. Three in
    a row on a route that allows a client 2 streams: each one's stream is given back."""
    for _ in range(3):
        started = time.monotonic()
        async with http.stream("GET", "/api/public/stall?size=1000000&sent=1000") as stream:
            assert stream.status_code == 200
            received = 0
            with pytest.raises(httpx.RemoteProtocolError):  # cut: the status was sent
                async for chunk in stream.aiter_bytes():
                    received += len(chunk)
        took = time.monotonic() - started
        assert received == 1000
        assert 1.0 <= took < 5.0, f"ended after {took:.2f} s (idle_timeout 1 s)"
        await eventually(_stalled(world, 0), timeout=5)


async def test_a_client_leaving_a_large_answer_frees_the_upstream_at_once(
        world: World) -> None:
    """A length-declared answer was not watched for the client leaving (only event streams
    were): with the upstream stalled it was never given back. The route's idle timeout is
    60 s, so only the disconnect can free it here."""
    status, _, writer = await _open_stream(
        world.gateway.port, "/api/streams/stall?size=1000000&sent=1000",
        await world.auth("alice"))
    assert status == 200
    await eventually(_stalled(world, 1), timeout=5)
    writer.transport.abort()
    await eventually(_stalled(world, 0), timeout=5)


# --- redirects -------------------------------------------------------------------------------

async def test_a_redirect_to_the_upstream_shows_the_client_the_public_path(
        http: httpx.AsyncClient) -> None:
    """Starlette's trailing-slash redirect answered `307 Location: http://127.0.0.1:9101/
    auth/login`: the upstream's own address, built from the Host the gateway sent."""
    moved = await http.post("/api/public/redirect?to=/public/login?next=1")
    assert moved.status_code == 307
    assert moved.headers["location"] == "/api/public/login?next=1"
    outside = await http.get("/api/public/redirect?to=/internal/admin")
    assert outside.status_code == 502
    assert outside.json()["error"]["code"] == "bad_gateway"
    assert "127.0.0.1" not in outside.text
    away = await http.get("/api/public/redirect?to=https://example.com/x")
    assert away.headers["location"] == "https://example.com/x"  # another site's: as it is

