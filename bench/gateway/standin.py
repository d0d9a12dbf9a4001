"""A minimal reverse proxy, pure ASGI: the stand-in for the gateway in `bench.gateway`, and
the app behind its server and client choice (`python -m bench.gateway --choice`).

It does what every reverse proxy must and nothing else: forward the method, path, query,
end-to-end headers and body to one upstream over a keep-alive pool, and stream the answer
back. No auth, no limits, no retries: so the table measures only the server (uvicorn or
granian) and the upstream client (aiohttp or httpx), the costs the gateway cannot avoid.

Served by import string, configured from the environment (every worker process reads it):

    BENCH_UPSTREAM_URL   http://127.0.0.1:PORT (required)
    BENCH_CLIENT         aiohttp (default) | httpx

    uvicorn bench.gateway.standin:app --loop uvloop --http httptools --workers 2
    granian --interface asgi --loop uvloop --workers 2 bench.gateway.standin:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import aiohttp
import httpx

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
Body = bytes | AsyncIterator[bytes] | None
Answer = tuple[int, Headers, AsyncIterator[bytes], Callable[[], Awaitable[None]]]
"""Status, headers, body chunks, and what releases the connection once they are read."""

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate",
                        b"proxy-authorization", b"te", b"trailer", b"transfer-encoding",
                        b"upgrade", b"host"})
"""Not forwarded (RFC 9110 7.6.1), and `host`: the client sets the upstream's."""
NOT_ANSWERED = HOP_BY_HOP | {b"date", b"server"}
"""The upstream's own `date` and `server` are dropped, as nginx does: the server adds its."""
POOL = 256
KEEPALIVE = 4.0
"""Seconds an idle upstream connection is kept: under uvicorn's 5 s, as core.http does."""


class Upstream(Protocol):
    """One upstream exchange: the status, headers and body chunks of its answer."""

    async def exchange(self, method: str, url: str, headers: Headers, body: Body) -> Answer:
        ...

    async def aclose(self) -> None: ...


class AiohttpUpstream:
    """One ClientSession (made in the worker's loop), no cookies, bodies passed as they are."""

    def __init__(self) -> None:
        connector = aiohttp.TCPConnector(limit=POOL, limit_per_host=0,
                                         keepalive_timeout=KEEPALIVE)
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30))

    async def exchange(self, method: str, url: str, headers: Headers, body: Body) -> Answer:
        sent = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        response = await self._session.request(method, url, headers=sent, data=body,
                                               allow_redirects=False)

        async def release() -> None:
            response.release()

        return (response.status, list(response.raw_headers), response.content.iter_any(),
                release)

    async def aclose(self) -> None:
        await self._session.close()


class HttpxUpstream:
    """httpx's connection pool without the client layer (cookies, redirects, auth), as
    core.http's HttpxTransport uses it."""

    def __init__(self) -> None:
        limits = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL,
                              keepalive_expiry=KEEPALIVE)
        self._transport = httpx.AsyncHTTPTransport(limits=limits)

    async def exchange(self, method: str, url: str, headers: Headers, body: Body) -> Answer:
        request = httpx.Request(method, url, headers=headers, content=body)
        response = await self._transport.handle_async_request(request)
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        return response.status_code, response.headers.raw, stream.__aiter__(), stream.aclose

    async def aclose(self) -> None:
        await self._transport.aclose()


CLIENTS: dict[str, Callable[[], Upstream]] = {"aiohttp": AiohttpUpstream,
                                              "httpx": HttpxUpstream}


async def _request_body(receive: Receive, first: Message) -> AsyncIterator[bytes]:
    yield first.get("body", b"")
    more = first.get("more_body", False)
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        more = message.get("more_body", False)


class StandinProxy:
    """The ASGI app: lifespan opens and closes the pool; every HTTP request is forwarded."""

    def __init__(self, upstream_url: str, client: str) -> None:
        if client not in CLIENTS:
            raise ValueError(f"BENCH_CLIENT must be one of {sorted(CLIENTS)}, not {client!r}")
        self._base = upstream_url.rstrip("/")
        self._client_name = client
        self._client: Upstream | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._forward(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = CLIENTS[self._client_name]()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self._client
        if client is None:  # a server without lifespan: open on first use
            client = self._client = CLIENTS[self._client_name]()
        url = self._base + scope["path"]
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        first = await receive()
        body: Body
        if first.get("more_body", False):
            body = _request_body(receive, first)
        else:
            body = first.get("body", b"") or None
        try:
            status, answer, chunks, release = await client.exchange(
                scope["method"], url, headers, body)
        except (aiohttp.ClientError, httpx.TransportError):
            await send({"type": "http.response.start", "status": 502,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body",
                        "body": b'{"error":{"code":"bad_gateway","message":"upstream failed"}}'})
            return
        try:
            lowered = [(k.lower(), v) for k, v in answer]
            await send({"type": "http.response.start", "status": status,
                        "headers": [(k, v) for k, v in lowered if k not in NOT_ANSWERED]})
            pending = b""  # one chunk behind, so a one-chunk body is one send
            async for chunk in chunks:
                if pending:
                    await send({"type": "http.response.body", "body": pending,
                                "more_body": True})
                pending = chunk
            await send({"type": "http.response.body", "body": pending})
        finally:
            await release()


def _from_environment() -> StandinProxy:
    url = os.environ.get("BENCH_UPSTREAM_URL", "")
    if not url.startswith("http://"):
        raise RuntimeError("BENCH_UPSTREAM_URL must be set to the upstream's http:// URL")
    return StandinProxy(url, os.environ.get("BENCH_CLIENT", "aiohttp"))


app = _from_environment() if "BENCH_UPSTREAM_URL" in os.environ else None
"""Built at import in each worker; None when imported without the environment (tests)."""
