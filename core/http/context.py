"""Who and what the current request is about, for the calls it makes to other services.

`RequestContextMiddleware` (a plain ASGI middleware, so it costs no extra task or body copy)
runs for every incoming request: it keeps the caller's `X-Request-ID` and `X-Correlation-ID`
when they are sane (at most 128 characters from a safe set), makes new ones otherwise, echoes
both on the response and binds them for the length of the request: the request id, with the
incoming `Authorization`, to this module's context variable, the correlation id to
`core.correlation` (where the outbox, the bus and the logs read it too). The service client
reads both and sends them on.

The correlation id spans everything one user action causes (defaulting to the first request
id); the request id names one request and is passed on as is, so the logs of every hop of a
call share it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import correlation
from core.correlation import CORRELATION_ID_HEADER as CORRELATION_ID_HEADER

REQUEST_ID_HEADER = "X-Request-ID"
MAX_ID_LENGTH = 128
_SAFE_ID = re.compile(r"[A-Za-z0-9._:+=@/-]+")
_REQUEST_ID = REQUEST_ID_HEADER.lower().encode()
_CORRELATION_ID = CORRELATION_ID_HEADER.lower().encode()
_AUTHORIZATION = b"authorization"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who the current request is from; its correlation id is in `core.correlation`."""

    request_id: str
    authorization: str | None = field(default=None, repr=False)
    """The incoming `Authorization` header as received (kept out of reprs and logs)."""


_current: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)


def current() -> RequestContext | None:
    """The context of the request being served, or None outside one (a consumer, a job)."""
    return _current.get()


@contextmanager
def bound(context: RequestContext) -> Iterator[RequestContext]:
    """Make `context` current for a block: for work that is not an HTTP request (a job that
    calls other services with a token of its own). Bind a correlation id with
    `core.correlation.bound`."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def new_id() -> str:
    """32 random hex digits (uuid4's randomness, without building a UUID per request)."""
    return os.urandom(16).hex()


def sane_id(value: str | None) -> str | None:
    """`value` if it is a usable id (1 to 128 safe characters), else None."""
    if value and len(value) <= MAX_ID_LENGTH and _SAFE_ID.fullmatch(value):
        return value
    return None


def request_ids(headers: Iterable[tuple[bytes, bytes]]) -> tuple[RequestContext, str]:
    """The context of a request with these (ASGI) headers, and its correlation id: the
    caller's ids when sane, new ones otherwise."""
    found: dict[bytes, str] = {}
    for name, value in headers:
        if name in (_REQUEST_ID, _CORRELATION_ID, _AUTHORIZATION):
            found.setdefault(name, value.decode("latin-1"))
    request_id = sane_id(found.get(_REQUEST_ID)) or new_id()
    correlation_id = sane_id(found.get(_CORRELATION_ID)) or request_id
    return RequestContext(request_id, found.get(_AUTHORIZATION)), correlation_id


def echoed_ids(context: RequestContext, correlation_id: str) -> list[tuple[bytes, bytes]]:
    """The response headers that echo the ids."""
    return [(_REQUEST_ID, context.request_id.encode()), (_CORRELATION_ID, correlation_id.encode())]


def with_ids(message: Message, echoed: list[tuple[bytes, bytes]]) -> Message:
    """`http.response.start` with the app's own id headers (if any) replaced by `echoed`."""
    headers = [(k, v) for k, v in message.get("headers", ())
               if k.lower() not in (_REQUEST_ID, _CORRELATION_ID)]
    return {**message, "headers": [*headers, *echoed]}


def bind(context: RequestContext) -> Token[RequestContext | None]:
    """Make `context` current until `unbind` (a middleware's cheaper `bound`)."""
    return _current.set(context)


def unbind(token: Token[RequestContext | None]) -> None:
    _current.reset(token)


class RequestContextMiddleware:
    """Reads or makes the request and correlation ids, echoes them, binds the context."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        context, correlation_id = request_ids(scope["headers"])
        echoed = echoed_ids(context, correlation_id)

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = with_ids(message, echoed)
            await send(message)

        with bound(context), correlation.bound(correlation_id):
            await self.app(scope, receive, send_with_ids)


def install_request_context(app: ASGIApp) -> None:
    """Add `RequestContextMiddleware` to a FastAPI/Starlette app (outermost of the middleware
    added so far: add it last so every other middleware sees the ids)."""
    add_middleware = getattr(app, "add_middleware", None)
    if add_middleware is None:
        raise TypeError("install_request_context needs a Starlette or FastAPI app")
    add_middleware(RequestContextMiddleware)
