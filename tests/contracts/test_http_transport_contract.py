"""The transport seam (core.http.transport), the same cases for every adapter against a real
uvicorn upstream: what is sent and received, bodies both ways (whole, streamed, chunked),
keep-alive reuse, streamed answers that can be left early, failures typed as `ConnectFailedError`
or `ExchangeFailedError`, a cancelled exchange that must not poison the pool, HEAD, and
concurrent exchanges each getting their own answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from core.http.aiohttp_transport import AiohttpTransport
from core.http.h1_transport import H1Transport
from core.http.httpx_transport import HttpxTransport
from core.http.transport import ConnectFailedError, ExchangeFailedError, Transport
from devinfra.process import free_port
from tests.helpers import eventually
from tests.http_support import Proc, RawServer, answer_each, garbage_server, reset, start

ADAPTERS: dict[str, Callable[[], Transport]] = {
    "aiohttp": lambda: AiohttpTransport(proxy=True), "httpx": HttpxTransport,
    "h1": H1Transport}


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[Proc]:
    proc = await start("gateway.tests.procs.upstream", "contract", ready="/health/ready")
    yield proc
    proc.stop()


@pytest.fixture(params=sorted(ADAPTERS))
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    made: Transport = ADAPTERS[request.param]()
    yield made
    await made.aclose()


def transport_name(transport: Transport) -> str:
    names = {AiohttpTransport: "aiohttp", HttpxTransport: "httpx", H1Transport: "h1"}
    return names[type(transport)]


async def call(transport: Transport, method: str, url: str,
               headers: list[tuple[str, str]] | None = None,
               content: bytes | AsyncIterator[bytes] | None = None) -> tuple[int, Any, bytes]:
    raw = await transport.open(method, url, headers or [], content)
    body = await raw.read()
    return raw.status, raw.headers, body


async def test_sends_the_request_and_reads_the_answer(transport: Transport,
                                                      upstream: Proc) -> None:
    status, headers, body = await call(transport, "GET", f"{upstream.url}/a/b?x=1&y=2",
                                       [("X-One", "1"), ("Accept", "a/b"), ("Accept", "c/d")])
    assert status == 200
    seen = json.loads(body)
    assert seen["path"] == "/a/b" and seen["query"] == "x=1&y=2"
    assert ["x-one", "1"] in seen["headers"]
    assert [v for k, v in seen["headers"] if k == "accept"] in (["a/b", "c/d"], ["a/b, c/d"])
    assert headers["X-UPSTREAM"] == "contract"  # case-insensitive
    cookies = [v for k, v in headers.items() if k.lower() == "set-cookie"]
    if transport_name(transport) == "httpx":
        # Cannot honour: httpx's Headers.items() joins a repeated field into one value,
        # which breaks Set-Cookie; the gateway uses the h1 transport.
        assert cookies == ["a=1, b=2"]
    else:
        assert cookies == ["a=1", "b=2"]


async def test_a_status_is_an_answer_not_an_error(transport: Transport, upstream: Proc) -> None:
    for code in (404, 500, 503):
        status, _, body = await call(transport, "POST", f"{upstream.url}/x/status/{code}")
        assert status == code and json.loads(body)["method"] == "POST"


async def chunks(total: int, size: int = 10_000) -> AsyncIterator[bytes]:
    for _ in range(total // size):
        yield b"z" * size
        await asyncio.sleep(0)


@pytest.mark.parametrize("declared", [False, True])
async def test_bodies_whole_and_streamed(transport: Transport, upstream: Proc,
                                         declared: bool) -> None:
    _, _, body = await call(transport, "POST", f"{upstream.url}/x", content=b"a" * 1234)
    assert json.loads(body)["body_size"] == 1234
    length = [("Content-Length", "300000")] if declared else []
    _, _, body = await call(transport, "PUT", f"{upstream.url}/x", length,
                            content=chunks(300_000))
    assert json.loads(body)["body_size"] == 300_000


async def test_connections_are_kept_alive(transport: Transport, upstream: Proc) -> None:
    ports = set()
    for _ in range(20):
        _, _, body = await call(transport, "GET", f"{upstream.url}/x")
        ports.add(json.loads(body)["port"])
    assert len(ports) == 1


async def test_a_streamed_answer_comes_as_it_is_sent_and_can_be_left(
        transport: Transport, upstream: Proc) -> None:
    before = await _state(upstream)
    raw = await transport.open("GET", f"{upstream.url}/x/sse?n=200&gap=0.1", [], None)
    got = b""
    async with asyncio.timeout(10):  # the whole stream takes 20 s
        async for chunk in raw.iter_chunks():
            got += chunk
            if got.count(b"\n\n") >= 3:
                break
    await raw.close()
    assert got.startswith(b"data: 0\n\ndata: 1\n\ndata: 2\n\n")

    async def left() -> bool:
        return bool((await _state(upstream))["sse_left"] == before["sse_left"] + 1)

    await eventually(left, timeout=10, interval=0.1)
    status, _, _ = await call(transport, "GET", f"{upstream.url}/x")  # the pool still works
    assert status == 200


async def test_a_cancelled_exchange_does_not_poison_the_pool(transport: Transport,
                                                             upstream: Proc) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await call(transport, "GET", f"{upstream.url}/x/slow?s=2")
    for n in range(3):
        _, _, body = await call(transport, "GET", f"{upstream.url}/x/after?n={n}")
        assert json.loads(body)["query"] == f"n={n}"  # not the slow answer arriving late


async def test_head_has_no_body_and_the_next_exchange_is_fine(transport: Transport,
                                                              upstream: Proc) -> None:
    status, _, body = await call(transport, "HEAD", f"{upstream.url}/x")
    assert status == 200 and body == b""
    _, _, body = await call(transport, "GET", f"{upstream.url}/y")
    assert json.loads(body)["path"] == "/y"


async def test_concurrent_exchanges_each_get_their_own_answer(transport: Transport,
                                                              upstream: Proc) -> None:
    answers = await asyncio.gather(*(call(transport, "GET", f"{upstream.url}/x?n={n}")
                                     for n in range(50)))
    assert [json.loads(body)["query"] for _, _, body in answers] == \
        [f"n={n}" for n in range(50)]


async def test_failures_are_typed(transport: Transport) -> None:
    with pytest.raises(ConnectFailedError):
        await transport.open("GET", f"http://127.0.0.1:{free_port()}/x", [], None)
    server, url = await garbage_server()
    try:
        with pytest.raises(ExchangeFailedError):
            await call(transport, "GET", f"{url}/x")
    finally:
        server.close()


async def test_a_connection_dropped_mid_body_is_an_exchange_failure(
        transport: Transport) -> None:
    server, url = await garbage_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
    try:
        with pytest.raises(ExchangeFailedError):
            await call(transport, "GET", f"{url}/x")
    finally:
        server.close()


# --- RFC 9112 where upstreams misbehave (raw TCP stand-ins) ---------------------------------

TOO_LARGE = (b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n"
             b"\r\ntoo big!")


@pytest.mark.parametrize("then", ["waits", "sends_on"])
async def test_an_early_error_answer_during_an_upload_is_the_answer(
        transport: Transport, then: str) -> None:
    """RFC 9112 §9.5: the upstream refuses the body after its first chunk, answers 413 and
    closes. The client hands the 413 back, whether the rest of the body is not ready yet
    ("waits": it must stop waiting to send it) or comes once the upstream has closed
    ("sends_on": writing it fails, the answer stands)."""
    closed, more = asyncio.Event(), asyncio.Event()

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readuntil(b"first\r\n")  # the first chunk, whole: nothing left unread
        writer.write(TOO_LARGE)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        closed.set()
        if then == "sends_on":
            more.set()

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        await more.wait()
        for _ in range(200):
            yield b"x" * 65536

    async with RawServer(refuse) as server:
        if transport_name(transport) == "httpx":
            # Cannot honour: httpcore sends the whole body before it reads any of the answer,
            # so it waits for the rest for ever, or (once writing fails) reports a broken
            # exchange. The gateway uses the h1 transport; services aiohttp's.
            with pytest.raises(TimeoutError if then == "waits" else ExchangeFailedError):
                async with asyncio.timeout(2 if then == "waits" else 10):
                    await transport.open("POST", f"{server.url}/upload", [], body())
            return
        async with asyncio.timeout(10):
            raw = await transport.open("POST", f"{server.url}/upload", [], body())
            assert raw.status == 413
            assert await raw.read() == b"too big!"
        assert server.made == 1


async def test_a_close_delimited_body_ends_at_a_clean_close_and_fails_at_a_reset(
        transport: Transport) -> None:
    """RFC 9112 §6.3: a body without a length ends when the connection ends, but only a
    clean end (FIN) is its end; a reset (RST) cut it short."""
    for how in ("close", "reset"):
        read_some = asyncio.Event()

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         how: str = how, read_some: asyncio.Event = read_some) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthe first part")
            await writer.drain()
            await read_some.wait()
            if how == "reset":
                reset(writer)
            else:
                writer.close()

        async with RawServer(answer) as server:
            raw = await transport.open("GET", f"{server.url}/x", [], None)
            chunks = raw.iter_chunks()
            try:
                async with asyncio.timeout(10):
                    assert await anext(chunks) == b"the first part"
                    read_some.set()
                    if how == "close" or transport_name(transport) == "aiohttp":
                        # aiohttp cannot honour the reset: it ends such a body at the end of
                        # the connection, however it ended (the gateway uses h1; services
                        # answer with a length or chunks, never close-delimited).
                        assert [chunk async for chunk in chunks] in ([], [b""])
                    else:
                        with pytest.raises(ExchangeFailedError):
                            async for _ in chunks:
                                pass
            finally:
                await chunks.aclose()
                await raw.close()


SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Smuggled: 1\r\n\r\nevil"


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_bytes_after_a_complete_answer_are_no_part_of_it(transport: Transport,
                                                                framing: str) -> None:
    """Bytes past the Content-Length or the last chunk belong to no answer: not to this
    one, nor (the connection is not reused) to the next request's."""
    answer = {"length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
              "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\n\r\n"}[framing]

    async def answer_and_more(reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        await answer_each(reader, writer, answer + SMUGGLED)

    async with RawServer(answer_and_more) as server:
        async with asyncio.timeout(10):
            bodies, smuggled = [], []
            for _ in range(2):
                raw = await transport.open("GET", f"{server.url}/x", [], None)
                assert raw.status == 200
                bodies.append(await raw.read())
                smuggled.append("x-smuggled" in {name.lower() for name in raw.headers})
        if transport_name(transport) == "httpx":
            # Cannot honour: httpcore keeps the connection and hands the smuggled answer to
            # the next request (the gateway uses the h1 transport; services aiohttp's).
            assert bodies == [b"hello", b"evil"] and smuggled == [False, True]
            assert server.made == 1
            return
        assert bodies == [b"hello", b"hello"] and smuggled == [False, False]
        assert server.made == 2  # the first connection was not reused


async def _state(upstream: Proc) -> dict[str, Any]:
    transport = H1Transport()
    try:
        _, _, body = await call(transport, "GET", f"{upstream.url}/_seen")
    finally:
        await transport.aclose()
    state: dict[str, Any] = json.loads(body)
    return state


@pytest.mark.parametrize("name", sorted(ADAPTERS))
async def test_the_same_under_uvloop(name: str, upstream: Proc) -> None:
    """The gateway and the services run on uvloop, whose transports are not asyncio's."""
    import uvloop

    async def exchanges() -> list[int]:
        transport = ADAPTERS[name]()
        try:
            sizes = []
            for content in (b"x" * 10, chunks(50_000)):
                _, _, body = await call(transport, "POST", f"{upstream.url}/u", content=content)
                sizes.append(json.loads(body)["body_size"])
            return sizes
        finally:
            await transport.aclose()

    assert await asyncio.to_thread(uvloop.run, exchanges()) == [10, 50_000]
