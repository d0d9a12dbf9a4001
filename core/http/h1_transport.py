"""A lean HTTP/1.1 client for the transport seam: asyncio protocols and the httptools parser
(the one uvicorn parses requests with), a keep-alive pool per host, and nothing else.

Why our own: the gateway makes one upstream exchange per request, and aiohttp's client spent
more CPU per exchange than everything else the gateway does (bench/gateway.py: about half of
the gateway's CPU per request was aiohttp's `ClientSession._request` and its stream reader).
This one writes the request head in one `write`, parses the answer with httptools, and hands
body chunks over as they come; `python -m bench.gateway` measures the difference.

What it does not do, on purpose: TLS (upstreams are plain HTTP inside the platform; use the
aiohttp transport for https), redirects, cookies, decompression (a proxy passes bodies on as
they are), `Expect: 100-continue`. Timeouts are the client's (`asyncio` cancellation): a
cancelled exchange closes its connection, which is never reused half-read.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from core.http.transport import ConnectFailed, ExchangeFailed, RawResponse

KEEPALIVE = 4.0
"""Seconds an idle pooled connection is kept (under uvicorn's 5 s: a request sent on a
connection the server is closing would fail, even one we may not retry)."""
MAX_BUFFERED = 256 * 1024
"""Body bytes read ahead of the consumer before reading from the socket pauses."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._loop = asyncio.get_running_loop()
        self._writable: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.raw_headers: list[tuple[str, str]] = []
        self.headers_done: asyncio.Future[None] = self._loop.create_future()
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.complete = False
        self.keep_alive = False
        self.until_close = False
        self.error: ExchangeFailed | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._informational = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ExchangeFailed(f"the answer is not HTTP: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.until_close and self.headers_done.done() and not self.complete:
            self.on_message_complete()  # a body delimited by the end of the connection
        elif not self.complete:
            self._fail(ExchangeFailed(f"the connection closed mid-exchange ({exc!r})"))
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ExchangeFailed("the connection closed while sending"))

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # --- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue and friends: the real answer follows
            self._informational = True
            self.raw_headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        names = {name.lower() for name, _ in self.raw_headers}
        self.until_close = ("content-length" not in names and "transfer-encoding" not in names
                            and status not in (204, 304))
        if not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(bytes(body))
        self.buffered += len(body)
        if self.buffered > MAX_BUFFERED and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True
        self._wake()

    # --- used by the exchange ---------------------------------------------------------------

    def _fail(self, error: ExchangeFailed) -> None:
        if self.error is None:
            self.error = error
        if not self.headers_done.done():
            self.headers_done.set_exception(error)
            self.headers_done.exception()  # retrieved: nobody may be waiting yet
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        while not self.chunks:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self._waiter = self._loop.create_future()
            await self._waiter
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.paused and self.buffered <= MAX_BUFFERED and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    async def drain(self) -> None:
        if self._writable is not None and not self._writable.done():
            await self._writable

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Response:
    __slots__ = ("_conn", "_done", "_headers", "_pool", "status")

    def __init__(self, pool: _Pool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self._done = False
        self.status = conn.status
        self._headers: CIMultiDictProxy[str] | None = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            self._headers = CIMultiDictProxy(CIMultiDict(self._conn.raw_headers))
        return self._headers

    async def read(self) -> bytes:
        chunks = [chunk async for chunk in self.iter_chunks()]
        return b"".join(chunks)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        try:
            while (chunk := await conn.next_chunk()) is not None:
                yield chunk
        except BaseException:
            self._finish(reuse=False)
            raise
        self._finish(reuse=True)

    async def close(self) -> None:
        self._finish(reuse=self._conn.complete and not self._conn.chunks)

    def _finish(self, *, reuse: bool) -> None:
        if not self._done:
            self._done = True
            self._pool.release(self._conn, reuse=reuse)


class _Pool:
    """Idle connections of one host, newest last (reused first: it is the least likely to
    have been closed by the server)."""

    def __init__(self, host: str, port: int, keepalive: float, max_idle: int) -> None:
        self.host, self.port = host, port
        self.keepalive = keepalive
        self.max_idle = max_idle
        self.idle: deque[_Connection] = deque()

    async def acquire(self) -> _Connection:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive:
                conn._reset()
                return conn
            conn.abort()
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except OSError as exc:
            raise ConnectFailed(f"connect to {self.host}:{self.port} failed: {exc!r}") from exc
        return conn

    def release(self, conn: _Connection, *, reuse: bool) -> None:
        if (reuse and conn.keep_alive and conn.complete and not conn.closed
                and len(self.idle) < self.max_idle):
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        elif conn.complete:
            _close(conn)
        else:  # half-read: the rest of the answer must not be taken for the next one
            conn.abort()

    def close(self) -> None:
        while self.idle:
            _close(self.idle.pop())


def _close(conn: _Connection) -> None:
    conn.closed = True
    if conn.transport is not None:
        conn.transport.close()


class H1Transport:
    """Plain HTTP/1.1 with keep-alive: see the module docstring. One event loop."""

    def __init__(self, pool_size: int = 256, *, keepalive: float = KEEPALIVE) -> None:
        """`pool_size`: idle connections kept per host (busy ones are not capped here: the
        client's bulkhead bounds the calls in flight)."""
        self._max_idle = pool_size
        self._keepalive = keepalive
        self._pools: dict[str, _Pool] = {}

    async def open(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   content: bytes | AsyncIterable[bytes] | None) -> RawResponse:
        pool, target, host = self._split(url)
        head = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
        given_length = False
        for name, value in headers:
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
                raise ValueError(f"header {name!r} has a line break or a colon in its name")
            lowered = name.lower()
            if lowered in ("host", "transfer-encoding", "connection"):
                continue
            if lowered == "content-length":
                given_length = True
            head.append(f"{name}: {value}\r\n")
        streamed = content is not None and not isinstance(content, bytes)
        if isinstance(content, bytes) and not given_length:
            head.append(f"Content-Length: {len(content)}\r\n")
        elif streamed and not given_length:
            head.append("Transfer-Encoding: chunked\r\n")
        head.append("\r\n")
        conn = await pool.acquire()
        try:
            await self._send(conn, "".join(head).encode("latin-1"), content,
                             chunked=streamed and not given_length)
            await conn.headers_done
        except BaseException:
            conn.abort()
            raise
        response = _Response(pool, conn)
        if method == "HEAD":  # no body follows, whatever the headers say
            conn.complete, conn.keep_alive = True, False
        return response

    async def _send(self, conn: _Connection, head: bytes,
                    content: bytes | AsyncIterable[bytes] | None, *, chunked: bool) -> None:
        transport = conn.transport
        if transport is None or conn.closed:
            raise ExchangeFailed("the connection closed before the request was sent")
        if content is None or isinstance(content, bytes):
            transport.write(head + content if content else head)
            return
        transport.write(head)
        async for chunk in content:
            if conn.closed:
                raise ExchangeFailed("the connection closed while sending the body")
            if chunk:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain()
        if chunked:
            transport.write(b"0\r\n\r\n")

    def _split(self, url: str) -> tuple[_Pool, str, str]:
        if not url.startswith("http://"):
            raise ValueError("H1Transport speaks plain http:// only (aiohttp's does https)")
        slash = url.find("/", 7)
        host = url[7:] if slash < 0 else url[7:slash]
        target = "/" if slash < 0 else url[slash:]
        pool = self._pools.get(host)
        if pool is None:
            if host.startswith("["):  # [v6]:port
                name, _, rest = host[1:].partition("]")
                port = rest[1:] if rest.startswith(":") else "80"
            else:
                name, _, port = host.partition(":")
            if not port.isdigit():
                raise ValueError(f"bad port in {url!r}")
            pool = self._pools[host] = _Pool(name, int(port or 80), self._keepalive,
                                             self._max_idle)
        return pool, target, host

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
