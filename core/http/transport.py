"""The transport seam: how one HTTP exchange goes over the wire, and how it can break.

The client (retries, breakers, balancing) is written against `Transport`; an adapter wraps one
HTTP library and translates its errors into the two that matter for a retry decision:
`ConnectFailedError` (nothing was sent: another instance can take the request) and
`ExchangeFailedError` (the connection broke, or the answer was not HTTP, after the request may
have been sent).
Timeouts are not the transport's business: the client puts every exchange under its own
`asyncio`-based timeout, so adapters turn their library's timeouts off.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import Protocol


class TransportError(Exception):
    """Root of what a transport raises; the message is for logs, never for clients."""


class ConnectFailedError(TransportError):
    """No connection could be made (refused, unreachable, DNS): the request was not sent."""


class ExchangeFailedError(TransportError):
    """The connection broke or the peer answered something that is not HTTP."""


class RawResponse(Protocol):
    """An answer whose status and headers have arrived; the body is read on demand.

    `read()` reads the rest of the body and gives the connection back to the pool;
    `close()` gives it back (or drops it, if the body was not read to the end).
    """

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive."""
        ...

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class Transport(Protocol):
    """Sends requests over a pool of kept-alive connections; safe for concurrent use by the
    tasks of one event loop. Follows no redirects and keeps no cookies: a service client
    speaks for many callers in turn."""

    async def open(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   content: bytes | AsyncIterable[bytes] | None) -> RawResponse:
        """Send a request (a body given as chunks is streamed: chunked, unless the headers
        carry its Content-Length); return once the status line and headers are in."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...
