"""Forwarding one request to its upstream and streaming the answer back.

The upstream call goes through `core.http.ServiceClient`, so the gateway balances, breaks,
retries, bulkheads and times out exactly as every service-to-service call does (one
implementation of each guard in the code base). What this module adds is the proxy's part:

- headers: hop-by-hop ones (RFC 9110 §7.6.1, and those the client's `Connection` names) are
  dropped both ways; so are the client's own `X-Forwarded-*`, `X-Authenticated-*` and id
  headers, which the gateway sets itself;
- the request body: 413 on a declared `Content-Length` over the limit before reading a byte.
  A small body (up to `GATEWAY_BUFFER_BYTES`) is read whole so an idempotent request can be
  retried on another instance; a larger one streams through as it arrives (never retried).
  A chunked body without a length is read up to the limit (413 beyond it, before anything is
  sent upstream: a request cut short must not reach a service looking complete);
- the response: one declared no larger than `GATEWAY_BUFFER_BYTES` is read whole before its
  status is sent, so an upstream that dies in the middle of it is retried (idempotent requests)
  or answered with a clean 502, never a cut connection. Anything larger, or without a length,
  is a stream: passed on chunk by chunk as the upstream sends it (Server-Sent Events pass
  through). A stream leaves the service's bulkhead once its headers are in and counts
  against the route's stream caps instead (gateway/streams.py: 429 for a client holding too
  many); the client's disconnect is watched, so a client that leaves frees the upstream
  connection at once; and a stream that passes no byte for the route's `idle_timeout` (the
  upstream stalls, or the client stops reading) is ended (the client sees a cut body: its
  status is long sent);
- redirects: a `Location` pointing at an upstream instance (as Starlette's trailing-slash
  redirect builds it, from the Host it was sent) is rewritten to the public path, or refused
  (502) when no public path leads there: a client never learns an internal address.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.types import Receive, Scope, Send

from core.http import Response, ServiceClient, UpstreamBadResponseError, UpstreamError
from core.service_registry import Instance
from core.tasks import cancel_and_wait
from gateway.config import GatewaySettings
from gateway.errors import GatewayError
from gateway.routes import Route
from gateway.streams import StreamSlots

Headers = list[tuple[bytes, bytes]]
log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"proxy-connection"})
_REQUEST_DROPPED = HOP_BY_HOP | {
    b"host", b"content-length", b"expect", b"x-request-id", b"x-correlation-id", b"forwarded",
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
    b"x-real-ip"}
_RESPONSE_DROPPED = HOP_BY_HOP | {b"date", b"server", b"x-request-id", b"x-correlation-id"}
_IDENTITY_PREFIX = b"x-authenticated-"
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class ClientGoneError(Exception):
    """The client disconnected while its request body was still coming."""


class StreamStalledError(Exception):
    """A streamed answer passed no byte for the route's idle timeout: it is ended (cut)."""


Discover = Callable[[str], Awaitable[list[Instance]]]


class Proxy:
    """Forwards matched requests through `client` (built with the proxy transport);
    `discover` lists a service's instances (to recognise redirects to them)."""

    def __init__(self, client: ServiceClient, settings: GatewaySettings,
                 discover: Discover | None = None) -> None:
        self.client = client
        self.discover = discover
        self.max_body = settings.gateway_max_body_bytes
        self.buffer_bytes = min(settings.gateway_buffer_bytes, self.max_body)
        self.streams = StreamSlots()

    async def forward(self, scope: Scope, receive: Receive, send: Send, route: Route,
                      upstream_path: str, extra_headers: Headers,
                      response_headers: Headers, client: str = "") -> None:
        """Send the request to `route.service` at `upstream_path`; stream the answer back
        with `response_headers` added. `client` names the caller for the stream caps (the
        rate limiter's key). Raises `GatewayError` only before the answer starts."""
        headers, length, chunked = _request_headers(scope["headers"])
        body, complete = await self._body(receive, length, chunked)
        if length is not None and not complete:
            headers.append(("content-length", str(length)))
        headers += [(k.decode("latin-1"), v.decode("latin-1")) for k, v in extra_headers]
        target = quote(upstream_path, safe=_PATH_SAFE)
        if scope["query_string"]:
            target = f"{target}?{scope['query_string'].decode('latin-1')}"
        try:
            response = await self.client.forward(
                scope["method"].upper(), route.service, target, headers, body,
                timeout=route.timeout, deadline=route.timeout * (route.retries + 1) + 1.0,
                attempts=route.retries + 1, read_up_to=self.buffer_bytes)
        except UpstreamError as exc:
            raise _refusal(exc) from exc
        try:
            # The disconnect can be watched once the client's body is all read (never
            # while the upload still reads from `receive`).
            read = complete or (isinstance(body, _BodyStream) and body.done)
            await self._respond(response, send, receive if read else None,
                                response_headers, route, client, scope["method"])
        except UpstreamError as exc:
            raise _refusal(exc) from exc
        finally:
            await response.aclose()

    async def _body(self, receive: Receive, length: int | None,
                    chunked: bool) -> tuple[bytes | AsyncIterable[bytes] | None, bool]:
        """The body to send, and whether it has been read to the end already."""
        if length is not None:
            if length > self.max_body:
                raise _too_large(self.max_body)
            if length > self.buffer_bytes:
                return _BodyStream(receive), False
            return await _read(receive, self.max_body), True
        if chunked:
            return await _read(receive, self.max_body), True
        return None, True

    async def _respond(self, response: Response, send: Send, watch: Receive | None,
                       extra: Headers, route: Route, client: str, method: str) -> None:
        headers: Headers = []
        length: int | None = None
        redirect = False
        for name, value in response.raw_headers:
            key = name.lower()
            if key not in _RESPONSE_DROPPED:
                headers.append((key, value))
                if key == b"content-length" and value.isdigit():
                    length = int(value)
                elif key == b"location":
                    redirect = True
        status = response.status_code
        if redirect and 300 <= status < 400:
            headers = await self._public_redirect(headers, route)
        start = {"type": "http.response.start", "status": status, "headers": headers + extra}
        whole = response.buffered
        if whole is not None:  # read within the attempt: no stream, no slot to give back
            await send(start)
            await _relay(whole, send, route.idle_timeout, response.service)
            return
        if (method == "HEAD" or status in (204, 304)
                or (length is not None and length <= self.buffer_bytes)):
            await send(start)  # no body
            await _pump(response, send, route.idle_timeout)
            return
        with self.streams.hold(route, client):
            response.release_slot()
            await send(start)
            pump = _pump(response, send, route.idle_timeout)
            try:
                if watch is None:
                    await pump
                else:
                    await _until_done_or_gone(pump, watch)
            except (UpstreamBadResponseError, StreamStalledError) as exc:
                # The status is sent: returning without the body's end makes the server
                # close the connection, and the client sees a cut body.
                log.warning("%s %s: answer cut after its status: %s", method, route.name, exc)

    async def _public_redirect(self, headers: Headers, route: Route) -> Headers:
        """`headers` with a `Location` at an upstream instance turned into the public path
        that leads there (GatewayError 502 when none does)."""
        origins: set[str] | None = None
        rewritten: Headers = []
        for key, value in headers:
            if key == b"location":
                if origins is None:
                    instances = await self.discover(route.service) if self.discover else []
                    origins = {_origin(i.url) for i in instances}
                value = _public_location(value.decode("latin-1"), route,
                                         origins).encode("latin-1")
            rewritten.append((key, value))
        return rewritten


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _public_location(location: str, route: Route, origins: set[str]) -> str:
    """`location` as the client must see it: one at an upstream instance (absolute, or an
    absolute path, which the client would resolve against the gateway) becomes the public
    path of `route` that leads there; any other is left alone."""
    parts = urlsplit(location)
    if parts.scheme or parts.netloc:
        if _origin(location) not in origins:
            return location  # another site's: not ours to change
    elif not location.startswith("/"):
        return location  # relative to the request's own path: right as it is
    public = _public_path(parts.path or "/", route)
    if public is None:
        raise GatewayError(502, "bad_gateway",
                           "The upstream redirected to a path outside this route")
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return public + query + fragment


def _public_path(path: str, route: Route) -> str | None:
    """The path a client sends to reach upstream `path` through `route` (the inverse of
    `Route.upstream_path`), or None when the route does not lead there."""
    rewrite = route.rewrite or route.prefix
    if not _under(path, rewrite):
        return None
    rest = path if rewrite == "/" else path[len(rewrite):]
    if route.prefix == "/":
        return rest or "/"
    return route.prefix + rest


def _under(path: str, prefix: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


async def _pump(response: Response, send: Send, idle: float) -> None:
    """Pass the body on as it comes, each chunk within `idle` seconds (to come from the
    upstream and to be taken by the client), else `StreamStalledError`. An upstream that breaks
    off mid-body raises `UpstreamBadResponseError` out of here. Either way the status is sent,
    so the only honest signal left is an incomplete body: the server closes the connection when
    the answer ends unfinished."""
    chunks = aiter(response.aiter_bytes())
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(idle) as timer:  # one timer, moved on at each chunk
            while True:
                timer.reschedule(loop.time() + idle)
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                if chunk:
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
    except TimeoutError:
        raise StreamStalledError(f"{response.service}: no byte passed for {idle:g} s") from None
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _relay(body: bytes, send: Send, idle: float, service: str) -> None:
    """`_pump` for a body already read whole: the same messages, without a chunk loop."""
    try:
        async with asyncio.timeout(idle):  # the client must take it within `idle` too
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
    except TimeoutError:
        raise StreamStalledError(f"{service}: no byte passed for {idle:g} s") from None
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_done_or_gone(pump: Any, receive: Receive) -> None:
    """Run the pump until it ends or the client disconnects (then stop it: the stream's
    upstream connection is given back by the caller's `async with`)."""
    pumping = asyncio.ensure_future(pump)
    watching = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((pumping, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(watching, pumping)  # the pump's own error, if any, propagates


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _request_headers(raw: Any) -> tuple[list[tuple[str, str]], int | None, bool]:
    """The client's headers to pass on, its declared body length, and whether it is chunked."""
    dropped = _REQUEST_DROPPED
    length: int | None = None
    chunked = False
    for name, value in raw:
        if name == b"connection":  # the headers it names are hop-by-hop too
            dropped = dropped | {v.strip().lower() for v in value.split(b",")}
        elif name == b"content-length":
            length = _length(value)
        elif name == b"transfer-encoding":
            chunked = True
    return ([(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw
             if k not in dropped and not k.startswith(_IDENTITY_PREFIX)], length, chunked)


def _length(value: bytes) -> int:
    if not value.isdigit() or len(value) > 18:
        raise GatewayError(400, "bad_content_length", "Content-Length must be a whole number")
    return int(value)


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _BodyStream:
    """The body as it arrives (its length was declared, and the server holds the client to
    it, so no limit is counted here); `done` once it has all been read."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGoneError()
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.done = True
                return


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, "body_too_large",
                        f"The request body is larger than the limit of {limit} bytes")


def _refusal(exc: UpstreamError) -> GatewayError:
    """The client's answer when no upstream answer came: 503 (none could take it), 504 (none
    answered in time), 502 (one answered with a server error or broke off). An upstream's own
    503 or 504 keeps its status."""
    status = exc.status_code
    if isinstance(exc, UpstreamBadResponseError) and exc.status in (503, 504):
        status = exc.status
    headers = dict(exc.headers)
    if status == 503:
        headers.setdefault("Retry-After", "1")
    code = {502: "bad_gateway", 503: "upstream_unavailable", 504: "upstream_timeout"}[status]
    return GatewayError(status, code, exc.message, headers)
