"""The gateway's own answers: one JSON error shape, sent straight on the ASGI channel.

The body is the platform's error shape (`{"error": {"code", "message"}}`, as every service
answers), so a client cannot tell whether the gateway or a service refused it by the shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import Send


class GatewayError(Exception):
    """Refuse the request with `status`, a stable `code` and a message for the client."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return json.dumps({"error": {"code": self.code, "message": self.message}},
                          separators=(",", ":")).encode()


async def send_error(send: Send, error: GatewayError) -> None:
    """Answer with `error` (the response must not have started)."""
    body = error.body()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
