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

Where HTTP/1.1 asks a client to be careful (RFC 9112):
- a streamed request body is sent while the answer is watched for (§9.5): an error answer
  that comes early (413, 401) stops the sending and is handed back as the answer, not turned
  into a broken exchange; any other early answer lets the body go on, and the connection is
  kept only if all of it was sent;
- a body delimited by the end of the connection ends only at a clean end (FIN): a reset
  means it was cut (§6.3);
- bytes after a complete answer (beyond its Content-Length, after its last chunk) are no
  part of it, nor of the next one: the connection is closed, never reused;
- idle connections are closed after `keepalive` seconds by a sweeper task (one per
  transport, started with its first pool, ended with `aclose()` or when no pool is left),
  and a host's pool is forgotten once it holds nothing, so hosts no longer called cost
  neither sockets nor memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from core.http.transport import ConnectFailedError, ExchangeFailedError, RawResponse

KEEPALIVE = 4.0
"""Seconds an idle pooled connection is kept (under uvicorn's 5 s: a request sent on a
connection the server is closing would fail, even one we may not retry)."""
MAX_BUFFERED = 256 * 1024
"""Body bytes read ahead of the consumer before reading from the socket pauses."""
SWEEPS_PER_KEEPALIVE = 4
"""How often idle connections are looked at: an idle one is closed within 1.25 keep-alives."""


_SET_HERE = frozenset({"host", "transfer-encoding", "connection"})
"""Request headers the transport writes itself (or never: it keeps its connections)."""


def _breaks(text: str) -> bool:
    return "\r" in text or "\n" in text


class _OverrunError(Exception):
    """The peer sent the start of another message after a complete answer."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.sending: asyncio.Future[None] | None = None
        """A request body still being sent after its answer came (see `open`)."""
        self._loop = asyncio.get_running_loop()
        self._writable: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done: asyncio.Future[None] = self._loop.create_future()
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.complete = False
        self.keep_alive = False
        self.until_close = False
        self.error: ExchangeFailedError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._informational = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.complete:  # after a complete answer (or while idle): nobody asked for it
            self._overrun()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.complete:  # the answer is whole; what followed it is dropped
                self._overrun()
                return
            self._fail(ExchangeFailedError(f"the answer is not HTTP: {exc}"))
            self.abort()

    def _overrun(self) -> None:
        """Bytes beyond a complete answer: a confused (or smuggling) peer. The answer keeps
        what it had; the connection, whose next bytes cannot be trusted, is closed."""
        self.keep_alive = False
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if (self.until_close and exc is None and self.headers_done.done()
                and not self.complete):
            self.on_message_complete()  # a body delimited by a clean end of the connection
        elif not self.complete:
            self._fail(ExchangeFailedError(f"the connection closed mid-exchange ({exc!r})"))
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ExchangeFailedError("the connection closed while sending"))

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise _OverrunError  # stops the parser: this message is no answer to anything sent

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue and friends: the real answer follows
            self._informational = True
            self.raw_headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        names = {name.lower() for name, _ in self.raw_headers}
        self.until_close = (b"content-length" not in names and b"transfer-encoding" not in names
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

    def _fail(self, error: ExchangeFailedError) -> None:
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
    __slots__ = ("_conn", "_done", "_headers", "_pool", "raw_headers", "status")

    def __init__(self, pool: _Pool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self._done = False
        self.status = conn.status
        self.raw_headers = conn.raw_headers
        """As they came (bytes): what a proxy passes on, without decoding them first."""
        self._headers: CIMultiDictProxy[str] | None = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            self._headers = CIMultiDictProxy(CIMultiDict(
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in self.raw_headers))
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
            sending = self._conn.sending
            if sending is not None:  # the body was still going out after the answer came
                self._conn.sending = None
                if not sending.done() or sending.cancelled() or sending.exception():
                    sending.cancel()
                    reuse = False
            self._pool.release(self._conn, reuse=reuse)


class _Pool:
    """Idle connections of one host, newest last (reused first: it is the least likely to
    have been closed by the server)."""

    def __init__(self, host: str, port: int, keepalive: float, max_idle: int) -> None:
        self.host, self.port = host, port
        self.keepalive = keepalive
        self.max_idle = max_idle
        self.idle: deque[_Connection] = deque()
        self.busy = 0
        """Connections out for an exchange (or being opened for one)."""

    async def acquire(self) -> _Connection:
        self.busy += 1
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
        except BaseException as exc:
            self.busy -= 1
            if isinstance(exc, OSError):
                raise ConnectFailedError(
                    f"connect to {self.host}:{self.port} failed: {exc!r}") from exc
            raise
        return conn

    def sweep(self, now: float) -> bool:
        """Close the idle connections past their keep-alive (or closed by the server);
        whether the pool is empty now, idle and busy."""
        if self.idle:
            kept: deque[_Connection] = deque()
            for conn in self.idle:
                if conn.closed or now - conn.idle_since >= self.keepalive:
                    _close(conn)
                else:
                    kept.append(conn)
            self.idle = kept
        return not self.idle and self.busy == 0

    def release(self, conn: _Connection, *, reuse: bool) -> None:
        self.busy -= 1
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


def _retrieved(task: asyncio.Future[None]) -> None:
    """Marks a background send's failure as seen: the answer already says what happened."""
    if not task.cancelled():
        task.exception()


def _close(conn: _Connection) -> None:
    conn.closed = True
    if conn.transport is not None:
        conn.transport.close()


class H1Transport:
    """Plain HTTP/1.1 with keep-alive: see the module docstring. One event loop."""

    def __init__(self, pool_size: int = 256, *, keepalive: float = KEEPALIVE) -> None:
        """`pool_size`: idle connections kept per host (busy ones are not capped here: the
        client's bulkhead bounds the calls in flight)."""
        if keepalive <= 0:
            raise ValueError("keepalive must be > 0")
        self._max_idle = pool_size
        self._keepalive = keepalive
        self._pools: dict[str, _Pool] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def open(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   content: bytes | AsyncIterable[bytes] | None) -> RawResponse:
        pool, target, host = self._split(url)
        head = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
        given_length = False
        for name, value in headers:
            if ":" in name:
                raise ValueError(f"header {name!r} has a colon in its name")
            lowered = name.lower()
            if lowered in _SET_HERE:
                continue
            if lowered == "content-length":
                given_length = True
            head.append(f"{name}: {value}\r\n")
        fields = "".join(head[1:])  # each line ends in the one CR LF it may hold
        if fields.count("\r") != len(head) - 1 or fields.count("\n") != len(head) - 1:
            bad = [name for name, value in headers if _breaks(name) or _breaks(value)]
            raise ValueError(f"header {bad[0]!r} has a line break in its name or value")
        streamed = content is not None and not isinstance(content, bytes)
        if isinstance(content, bytes) and not given_length:
            head.append(f"Content-Length: {len(content)}\r\n")
        elif streamed and not given_length:
            head.append("Transfer-Encoding: chunked\r\n")
        head.append("\r\n")
        conn = await pool.acquire()
        try:
            if isinstance(content, AsyncIterable):
                await self._exchange_streamed(conn, "".join(head).encode("latin-1"), content,
                                              chunked=not given_length)
            else:
                await self._send(conn, "".join(head).encode("latin-1"), content,
                                 chunked=False)
                await conn.headers_done
        except BaseException:
            pool.release(conn, reuse=False)  # half-way: aborted
            raise
        response = _Response(pool, conn)
        if method == "HEAD":  # no body follows, whatever the headers say
            conn.complete, conn.keep_alive = True, False
        return response

    async def _exchange_streamed(self, conn: _Connection, head: bytes,
                                 content: AsyncIterable[bytes], *, chunked: bool) -> None:
        """Send the body while watching for the answer (RFC 9112 §9.5): an early error
        answer stops the sending; another early answer lets it go on in the background
        (`conn.sending`, settled when the response is released)."""
        sending = asyncio.ensure_future(self._send(conn, head, content, chunked=chunked))
        sending.add_done_callback(_retrieved)
        answered = conn.headers_done
        try:
            await asyncio.wait((sending, answered), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            sending.cancel()
            raise
        if not answered.done():  # all sent (or the sending failed) before any answer
            sending.result()
            await answered
            return
        if answered.exception() is not None or conn.status >= 400 or not conn.keep_alive:
            sending.cancel()  # the server wants no more of it (or is closing)
        answered.result()  # the connection broke with no answer: that error
        if not sending.done():
            conn.sending = sending
        elif sending.cancelled() or sending.exception() is not None:
            conn.keep_alive = False  # the body was cut short: this connection is done

    async def _send(self, conn: _Connection, head: bytes,
                    content: bytes | AsyncIterable[bytes] | None, *, chunked: bool) -> None:
        transport = conn.transport
        if transport is None or conn.closed:
            raise ExchangeFailedError("the connection closed before the request was sent")
        if content is None or isinstance(content, bytes):
            transport.write(head + content if content else head)
            return
        transport.write(head)
        async for chunk in content:
            if conn.closed:
                raise ExchangeFailedError("the connection closed while sending the body")
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
            if self._sweeper is None or self._sweeper.done():
                self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
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

    async def _sweep(self) -> None:
        """Close expired idle connections and forget empty pools until none is left."""
        interval = self._keepalive / SWEEPS_PER_KEEPALIVE
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for host, pool in list(self._pools.items()):
                if pool.sweep(now):
                    del self._pools[host]
            if not self._pools:
                return  # the next new pool starts another sweeper

    async def aclose(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None and not sweeper.done():
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
