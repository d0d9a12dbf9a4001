"""The upstream every contender of `bench.gateway` calls: a raw ASGI app, so the upstream
costs as little as a Python service can and the differences are the proxies'.

    GET /api/ping                 a small JSON document (about 300 bytes)
    GET /.well-known/jwks.json    the JWKS in the file BENCH_JWKS_FILE (the gateway's keys)
    GET /health/ready, /live      {"status":"ok"} (the gateway checks its upstreams)
    anything else                 404

    BENCH_JWKS_FILE=... uvicorn bench.gateway.upstream:app --loop uvloop --http httptools
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PING = json.dumps({
    "status": "ok",
    "service": "bench-upstream",
    "version": "1.0.0",
    "instance": "bench-upstream-1",
    "checks": {"database": "ok", "kafka": "ok", "cache": "ok"},
    "driver": {"id": "5f0c6d0e-8d1f-4c47-9a43-0f6f1d3e2b71", "status": "available",
               "location": {"lat": 52.520008, "lon": 13.404954}, "rating": 4.87},
    "links": {"self": "/api/ping", "health": "/health/ready"},
}, separators=(",", ":")).encode()
JSON = b"application/json"
_OK = b'{"status":"ok"}'
_NOT_FOUND = b'{"error":{"code":"not_found","message":"no such path"}}'


def _jwks() -> bytes:
    path = os.environ.get("BENCH_JWKS_FILE")
    return Path(path).read_bytes() if path else b'{"keys":[]}'


JWKS = _jwks()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    status, body = 200, PING
    if path == "/.well-known/jwks.json":
        body = JWKS
    elif path in ("/health/ready", "/health/live"):
        body = _OK
    elif path != "/api/ping":
        status, body = 404, _NOT_FOUND
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", JSON),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
