"""`python -m gateway.tests.procs.upstream PORT NAME`: a stand-in upstream for the gateway's
tests, served by uvicorn. It answers what it was sent, so a test can see what the gateway
passed on, and it counts what reached it, so a test can prove that something did not.

    GET  /_seen                every request that reached it (not counting /_seen, /_control)
    POST /_control/ready/{0|1} make /health/ready fail or pass
    GET  /health/ready         200, or 503 while made unready
    GET  /openapi.json         a small spec of its own paths
    GET  .../sse?n=&gap=       n Server-Sent Events, `gap` seconds apart
    GET  .../slow?s=           answers after `s` seconds
    ANY  .../status/{code}     answers `code`
    ANY  .../cut?size=&only=   promises `size` bytes (default 100), sends half and drops the
                               connection (only when this is the instance named `only`, if given)
    GET  .../stall?size=&sent= promises `size` bytes, sends `sent`, then nothing until the caller
                               leaves (`stalled` counts those still held open)
    GET  .../redirect?to=      307 to `to`; a `to` of "/..." is made absolute on the Host it was
                               sent, as Starlette's trailing-slash redirect does
    ANY  anything else         echoes: instance, method, path, query, headers, body size
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from starlette.types import Receive, Scope, Send

from core.serving import ServerLimits, run

NAME = sys.argv[2] if len(sys.argv) > 2 else "upstream"
seen: list[dict[str, Any]] = []
state = {"ready": True, "sse_left": 0, "stalled": 0}

SPEC = {"openapi": "3.1.0", "info": {"title": NAME, "version": "1"}, "paths": {
    "/things/{thing_id}": {"get": {"operationId": "get_thing", "parameters": [
        {"name": "thing_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "a thing (what the request was)", "content": {
            "application/json": {"schema": {"type": "object"}}}}}}}}}


async def _json(send: Send, status: int, body: Any,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path: str = scope["path"]
    query = scope["query_string"].decode()
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    if path == "/_seen":
        await _json(send, 200, {"requests": seen, **state})
        return
    if path.startswith("/_control/ready/"):
        state["ready"] = path.endswith("/1")
        await _json(send, 200, state)
        return
    if path == "/health/ready":
        await _json(send, 200 if state["ready"] else 503, {"ready": state["ready"]})
        return
    if path == "/openapi.json":
        await _json(send, 200, SPEC)
        return
    body = await _body(receive)
    headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    record = {"instance": NAME, "method": scope["method"], "path": path,
              "raw_path": scope.get("raw_path", b"").decode("latin-1"), "query": query,
              "headers": headers, "body_size": len(body), "client": scope["client"][0],
              "port": scope["client"][1]}
    seen.append(record)
    if path.endswith("/sse"):
        await _sse(receive, send, int(params.get("n", "5")), float(params.get("gap", "0.2")))
    elif path.endswith("/slow"):
        await asyncio.sleep(float(params.get("s", "1")))
        await _json(send, 200, record)
    elif path.endswith("/cut") and params.get("only", NAME) == NAME:
        await _cut(send, int(params.get("size", "100")))
    elif path.endswith("/stall"):
        await _stall(receive, send, int(params.get("size", "1000000")),
                     int(params.get("sent", "1000")))
    elif path.endswith("/redirect"):
        await _redirect(scope, send, params.get("to", "/"))
    elif "/status/" in path:
        await _json(send, int(path.rsplit("/", 1)[1]), record,
                    [(b"retry-after", b"1")] if path.endswith("/503") else [])
    else:
        await _json(send, 200, record, [(b"x-upstream", NAME.encode()),
                                        (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")])


async def _cut(send: Send, size: int) -> None:
    """Die in the middle of an answer: the status and half the promised body are sent, then
    the raise makes uvicorn drop the connection."""
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-length", str(size).encode()), (b"x-upstream", NAME.encode())]})
    await send({"type": "http.response.body", "body": b"x" * (size // 2), "more_body": True})
    raise RuntimeError("cut off on purpose")


async def _stall(receive: Receive, send: Send, size: int, sent: int) -> None:
    """Start an answer and stop sending in the middle of it, holding the connection open
    until the caller goes away."""
    state["stalled"] += 1
    try:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(size).encode()), (b"x-upstream", NAME.encode())]})
        await send({"type": "http.response.body", "body": b"s" * sent, "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:
        state["stalled"] -= 1


async def _redirect(scope: Scope, send: Send, to: str) -> None:
    if to.startswith("/"):
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        to = f"http://{host}{to}"
    await send({"type": "http.response.start", "status": 307, "headers": [
        (b"location", to.encode("latin-1")), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def _sse(receive: Receive, send: Send, count: int, gap: float) -> None:
    """Stream events; stop at once (and count it) when the caller goes away."""
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
    gone = asyncio.ensure_future(receive())  # the body was read: next comes the disconnect
    try:
        for n in range(count):
            await send({"type": "http.response.body", "body": f"data: {n}\n\n".encode(),
                        "more_body": True})
            await asyncio.wait((gone,), timeout=gap)
            if gone.done():
                state["sse_left"] += 1
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        gone.cancel()


if __name__ == "__main__":
    # As services are served (core.serving): heads bounded, lingering close.
    run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", loop="uvloop",
        limits=ServerLimits(head_timeout=float(os.environ.get("HEAD_TIMEOUT", "10"))))
