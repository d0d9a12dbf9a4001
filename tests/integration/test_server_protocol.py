"""`core.server_protocol` in a real uvicorn server on a loopback port, in this process (the
gateway's and a service's processes: gateway/tests/test_gateway_connections.py): heads bounded
in size and time before the app sees them, and lingering close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import uvicorn
from starlette.types import Receive, Scope, Send

from core.serving import ServerConfig, ServerLimits
from devinfra.process import free_port

LIMITS = ServerLimits(max_head_bytes=8 * 1024, head_timeout=0.5, linger_seconds=2.0,
                      linger_bytes=8 << 20)
seen: list[str] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers 413 to a POST without reading its body (as the gateway does over its limit),
    200 to anything else."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    seen.append(scope["path"])
    status = 413 if scope["method"] == "POST" else 200
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest_asyncio.fixture(loop_scope="session")
async def port() -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(ServerConfig(app, server_limits=LIMITS, host="127.0.0.1",
                                         port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "the server did not start"
        await asyncio.sleep(0.01)
    seen.clear()
    yield port
    server.should_exit = True
    await serving


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data`, then read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.transport.abort()


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_a_head_within_the_limit_is_served_and_keeps_alive(port: int) -> None:
    head = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Fill: " + b"f" * (7 * 1024) + b"\r\n\r\n"
    answer = await exchange(port, head + b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and seen == ["/a", "/b"]


async def test_a_head_over_the_limit_gets_431_and_the_app_never_sees_it(port: int) -> None:
    started = time.monotonic()
    answer = await exchange(port, b"GET /big HTTP/1.1\r\nHost: x\r\nX-Big: "
                            + b"b" * (4 << 20) + b"\r\n\r\n")
    assert status(answer) == 431, answer[:200]
    assert b'"head_too_large"' in answer and b"8192 bytes" in answer
    assert time.monotonic() - started < 2.0
    assert seen == []


async def test_a_second_head_over_the_limit_on_a_kept_connection_gets_431(port: int) -> None:
    first = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
    second = b"GET /second HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (9 * 1024) + b"\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(first)
        assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b"ok"), 5)
        writer.write(second)
        rest = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.transport.abort()
    assert status(rest) == 431 and seen == ["/first"]


@pytest.mark.parametrize("sent", [b"", b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: "])
async def test_a_head_not_complete_within_the_timeout_is_closed(port: int, sent: bytes) -> None:
    started = time.monotonic()
    answer = await exchange(port, sent)
    took = time.monotonic() - started
    assert 0.4 <= took < 2.0, f"closed after {took:.2f} s (head timeout 0.5 s)"
    if sent:
        assert status(answer) == 408 and b'"head_timeout"' in answer
    else:
        assert answer == b""  # nothing was asked: nothing is answered
    assert seen == []


async def test_the_head_timer_starts_again_with_each_request(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for path in ("/one", "/two", "/three"):  # 0.3 s apart: 0.9 s on one connection
            await asyncio.sleep(0.3)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b"ok"), 5)
    finally:
        writer.transport.abort()
    assert seen == ["/one", "/two", "/three"]


async def test_an_answer_before_the_body_reaches_a_client_still_sending(port: int) -> None:
    """The app answers 413 without reading the 4 MB body; `Connection: close` makes the
    server close, while the client is still sending (it reads only when done)."""
    body = b"x" * (4 << 20)
    answer = await exchange(port, b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert status(answer) == 413 and answer.endswith(b"ok")


async def test_lingering_ends_past_its_bytes(port: int) -> None:
    """A client that goes on sending past `linger_bytes` is cut off: no longer than that."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Content-Length: 100000000\r\n\r\n")
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.readuntil(b"ok"), 5)
    assert status(answer) == 413
    try:
        with pytest.raises(ConnectionError):
            for _ in range(200):  # 200 x 1 MiB, far past the 8 MiB lingered
                writer.write(b"y" * (1 << 20))
                await asyncio.wait_for(writer.drain(), 5)
    finally:
        writer.transport.abort()
    assert time.monotonic() - started < LIMITS.linger_seconds


async def test_lingering_ends_past_its_time(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Length: 100\r\n\r\n")
        assert status(await asyncio.wait_for(reader.readuntil(b"ok"), 5)) == 413
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server's FIN
        writer.write(b"z" * 10)  # still read and dropped while lingering ...
        await asyncio.sleep(0)
        closed = await asyncio.wait_for(_until_reset(writer), 5)  # ... then closed
    finally:
        writer.transport.abort()
    assert closed - started < LIMITS.linger_seconds + 1.0


async def _until_reset(writer: asyncio.StreamWriter) -> float:
    """When writing on the connection first fails (the server closed it for good)."""
    try:
        while True:
            writer.write(b"z")
            await writer.drain()
            await asyncio.sleep(0.05)
    except ConnectionError:
        return time.monotonic()
