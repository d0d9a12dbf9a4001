"""uvicorn's httptools protocol with the two bounds it lacks: on a request head, and on closing.

A request head is bounded in size and in time before it is parsed. httptools has no limit of
its own: it copies a header value as it grows (quadratic in its length: a 64 MB value cost
6.7 s of CPU before the app could answer 431) and keeps a half-sent head open for ever
(slowloris). Here the bytes fed to the parser while a head is incomplete are counted, and past
`max_head_bytes` the connection gets 431 without the rest being parsed; a head not complete
`head_timeout` seconds after its connection opened or its first byte came gets 408 and the
connection is closed.

Closing is lingering (RFC 9112 §9.6): when the server closes a connection in the middle of a
request (the app answered 413 without reading the body, or the head was refused), the answer
is flushed and the sending side shut, and what the client still sends is read and dropped,
until the client closes, for at most `linger_seconds` and `linger_bytes`. Closed at once
instead, the kernel answers the unread bytes with a reset, and a client that sends its whole
body before reading (urllib, requests) sees the reset and never the answer.

Task safety: one protocol per connection, on the server's event loop, as uvicorn's own.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BoundedHttpToolsProtocol", "ServerLimits"]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What a connection may cost before the app sees a request."""

    max_head_bytes: int = 64 * 1024
    """The request line and headers together; beyond: 431 and close."""
    head_timeout: float = 10.0
    """Seconds to receive a whole head (from the connection's start, or the head's first
    byte); beyond: 408 and close."""
    linger_seconds: float = 5.0
    linger_bytes: int = 64 * 1024 * 1024
    """How long, and how much, a connection closed mid-request is read (and dropped) for."""

    def __post_init__(self) -> None:
        if self.max_head_bytes < 1024 or self.head_timeout <= 0:
            raise ValueError("max_head_bytes must be >= 1024 and head_timeout > 0")
        if self.linger_seconds < 0 or self.linger_bytes < 0:
            raise ValueError("linger_seconds and linger_bytes must be >= 0")


def _refusal(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}},
                      separators=(",", ":")).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class _Transport:
    """The connection's transport as uvicorn sees it: every call passes through, except
    `close()`, which closes lingering when a request is half received."""

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        # The hot calls are the transport's own bound methods: no wrapper cost per write.
        self.write = transport.write
        self.writelines = transport.writelines
        self.get_extra_info = transport.get_extra_info
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading
        self.set_protocol = transport.set_protocol

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def close(self) -> None:
        self._protocol.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with bounded heads and lingering close; the limits come from
    `config.server_limits` (a `ServerLimits`; defaults when the config has none)."""

    lingering = False

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ServerLimits = getattr(config, "server_limits", None) or ServerLimits()
        self._raw: asyncio.Transport | None = None
        self._in_head = True
        """The bytes coming are (part of) a request head."""
        self._in_message = False
        """A request has begun and its body is not all in."""
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingered = 0

    # --- the connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        super().connection_made(cast(asyncio.Transport, _Transport(self._raw, self)))
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._lingered += len(data)
            if self._lingered > self.limits.linger_bytes:
                self._close_now()
            return
        limit = self.limits.max_head_bytes
        while data and self._in_head:
            room = limit - self._head_bytes
            if room <= 0:
                self._refuse(431, "Request Header Fields Too Large", "head_too_large",
                             f"The request line and headers are larger than {limit} bytes")
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.parser is None or self.lingering or self._closing():
                return
        if data:
            super().data_received(data)

    def eof_received(self) -> None:
        if self.lingering:  # the client is done sending: the linger is over
            self._close_now()

    def shutdown(self) -> None:
        if self.lingering:
            self._close_now()
        super().shutdown()

    # --- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = True
        if self._head_timer is None:
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._in_message = False
        super().on_message_complete()

    # --- refusing and closing ---------------------------------------------------------------

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        raw = self._raw
        if raw is None or raw.is_closing() or self.lingering:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._start_head_timer()  # the app is still answering the request before
            return
        if self._in_message:
            raw.write(_refusal(408, "Request Timeout", "head_timeout",
                                     f"The request head took longer than "
                                     f"{self.limits.head_timeout:g} s to arrive"))
        self._close_now()

    def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
        """Answer `status` in place of the app (unless it is answering a request before
        this one: then the connection is only closed) and close, lingering."""
        if self._raw is None:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._close_now()  # the app is writing its answer: no room for ours
            return
        self._raw.write(_refusal(status, reason, code, message))
        self._in_message = True
        self.close()

    def close(self) -> None:
        """Close; lingering when a request is half received (its client may still send)."""
        raw = self._raw
        if raw is None or raw.is_closing() or self.lingering:
            return
        if not self._in_message or self.limits.linger_seconds <= 0 or not raw.can_write_eof():
            raw.close()
            return
        self.lingering = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        raw.write_eof()  # after what is buffered: the answer goes out whole, then FIN
        raw.resume_reading()
        self._linger_timer = self.loop.call_later(self.limits.linger_seconds, self._close_now)

    def _closing(self) -> bool:
        return self._raw is None or self._raw.is_closing()

    def _close_now(self) -> None:
        if self._raw is not None and not self._raw.is_closing():
            self._raw.close()
