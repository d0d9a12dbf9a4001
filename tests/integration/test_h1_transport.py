"""H1Transport against real TCP servers, where it goes beyond the transport contract
(tests/contracts/test_http_transport_contract.py): idle connections are closed once their
keep-alive has passed even when their host is never called again, and a host's pool is
forgotten once it holds nothing (issue 19, item 11: 100 sockets stayed open for ever); an
early answer that is not an error lets the request body go on (full duplex)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from core.http.h1_transport import H1Transport
from core.http.transport import ExchangeFailedError
from tests.helpers import eventually
from tests.http_support import RawServer, answer_each, reset

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request and never closes: only the client ends the connection."""
    await answer_each(reader, writer, OK)


async def test_idle_connections_of_hosts_no_longer_called_are_closed_and_forgotten() -> None:
    transport = H1Transport(keepalive=0.5)
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(RawServer(keep_alive)) for _ in range(100)]
        try:
            for server in servers:
                raw = await transport.open("GET", f"{server.url}/x", [], None)
                assert await raw.read() == b"ok"
            called = time.monotonic()
            assert sum(server.open for server in servers) == 100  # kept alive, idle
            assert len(transport._pools) == 100

            await eventually(lambda: sum(server.open for server in servers) == 0,
                             timeout=10, interval=0.02)
            assert time.monotonic() - called < 0.5 * 1.25 + 1.0  # a sweep after keep-alive
            assert transport._pools == {}  # nothing kept for hosts no longer called
            await eventually(lambda: transport._sweeper is None or transport._sweeper.done(),
                             timeout=5)

            raw = await transport.open("GET", f"{servers[0].url}/x", [], None)  # works again
            assert await raw.read() == b"ok"
            assert servers[0].made == 2
            await eventually(lambda: servers[0].open == 0, timeout=10, interval=0.02)
        finally:
            await transport.aclose()


async def test_a_connection_in_use_is_neither_swept_nor_its_pool_forgotten() -> None:
    transport = H1Transport(keepalive=0.2)
    go_on = asyncio.Event()

    async def slow_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nha")
        await go_on.wait()
        writer.write(b"lf")
        await keep_alive(reader, writer)

    async with RawServer(slow_body) as server:
        try:
            raw = await transport.open("GET", f"{server.url}/x", [], None)
            await asyncio.sleep(1.0)  # five keep-alives: several sweeps pass the busy one
            assert server.open == 1 and len(transport._pools) == 1
            go_on.set()
            assert await raw.read() == b"half"
            await eventually(lambda: server.open == 0, timeout=10, interval=0.02)
            assert transport._pools == {}
        finally:
            await transport.aclose()


async def test_aclose_ends_the_sweeper_and_closes_what_is_idle() -> None:
    transport = H1Transport(keepalive=30)
    async with RawServer(keep_alive) as server:
        raw = await transport.open("GET", f"{server.url}/x", [], None)
        await raw.read()
        sweeper = transport._sweeper
        assert sweeper is not None and not sweeper.done()
        await transport.aclose()
        assert sweeper.cancelled() and transport._pools == {}
        await eventually(lambda: server.open == 0, timeout=10, interval=0.02)


async def test_an_early_answer_that_is_no_error_lets_the_body_go_on() -> None:
    """RFC 9112 §9.5 stops the body only for an error answer: a server that answers first
    and reads the body while it streams its own gets all of it, and the connection, whole
    both ways, is reused."""
    got: list[bytes] = []

    async def duplex(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
        await writer.drain()
        got.append(await reader.readuntil(b"0\r\n\r\n"))  # the whole request body
        writer.write(b"0\r\n\r\n")
        await keep_alive(reader, writer)

    answered = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        await answered.wait()  # the rest only once the answer has begun
        yield b"second"

    transport = H1Transport()
    async with RawServer(duplex) as server:
        try:
            async with asyncio.timeout(10):
                raw = await transport.open("POST", f"{server.url}/duplex", [], body())
                assert raw.status == 200
                answered.set()
                assert await raw.read() == b"ok"
                assert got == [b"5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n"]
                raw = await transport.open("GET", f"{server.url}/x", [], None)
                assert await raw.read() == b"ok"
            assert server.made == 1
        finally:
            await transport.aclose()


async def test_the_rfc_9112_cases_hold_under_uvloop() -> None:
    """The gateway runs on uvloop, whose transports report a reset and an end of connection
    themselves: the contract's reset, overrun and early-answer cases, once more there."""
    import uvloop

    async def cases() -> list[object]:
        seen: list[object] = []
        transport = H1Transport()
        read_some = asyncio.Event()

        async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nfirst")
            await writer.drain()
            await read_some.wait()
            reset(writer)

        async def overrun(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await answer_each(reader, writer, OK + b"HTTP/1.1 200 OK\r\nContent-Length: 4"
                                              b"\r\n\r\nevil")

        async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readuntil(b"first\r\n")
            writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n"
                         b"Connection: close\r\n\r\nbig")
            await writer.drain()

        async def upload() -> AsyncIterator[bytes]:
            yield b"first"
            await asyncio.Event().wait()

        try:
            async with asyncio.timeout(10):
                async with RawServer(cut) as server:
                    raw = await transport.open("GET", f"{server.url}/x", [], None)
                    chunks = raw.iter_chunks()
                    seen.append(await anext(chunks))
                    read_some.set()
                    try:
                        seen.append([chunk async for chunk in chunks])
                    except ExchangeFailedError:
                        seen.append("cut")
                    await raw.close()
                async with RawServer(overrun) as server:
                    for _ in range(2):
                        raw = await transport.open("GET", f"{server.url}/x", [], None)
                        seen.append(await raw.read())
                    seen.append(server.made)
                async with RawServer(refuse) as server:
                    raw = await transport.open("POST", f"{server.url}/x", [], upload())
                    seen.append((raw.status, await raw.read()))
        finally:
            await transport.aclose()
        return seen

    assert await asyncio.to_thread(uvloop.run, cases()) == [
        b"first", "cut", b"ok", b"ok", 2, (413, b"big")]
