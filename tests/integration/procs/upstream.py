"""`python -m tests.integration.procs.upstream PORT NAME`: an upstream for the service-client
tests. `/work` answers as told by `POST /_mode` (a status, a delay, a Retry-After) and counts
what reaches it (`GET /_count`); `/echo` returns the headers it received."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

NAME = sys.argv[2] if len(sys.argv) > 2 else "upstream"
app = FastAPI()
mode: dict[str, Any] = {"status": 200, "delay": 0.0, "retry_after": None}
counts: Counter[str] = Counter()


@app.api_route("/work", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def work(request: Request) -> Response:
    counts[request.method] += 1
    if mode["delay"]:
        await asyncio.sleep(mode["delay"])
    headers = {} if mode["retry_after"] is None else {"Retry-After": str(mode["retry_after"])}
    return JSONResponse({"instance": NAME, "method": request.method},
                        status_code=mode["status"], headers=headers)


@app.get("/echo")
async def echo(request: Request) -> dict[str, Any]:
    counts["echo"] += 1
    names = ("x-request-id", "x-correlation-id", "authorization", "idempotency-key")
    return {"instance": NAME, "headers": {n: request.headers.get(n) for n in names}}


@app.get("/not-json")
async def not_json() -> Response:
    return PlainTextResponse("<html>surprise</html>")


@app.get("/missing")
async def missing() -> Response:
    return JSONResponse({"error": "no such thing"}, status_code=404)


@app.get("/stream")
async def stream() -> Response:
    async def chunks() -> Any:
        for n in range(3):
            yield f"chunk-{n};".encode()
            await asyncio.sleep(0.01)
    return StreamingResponse(chunks(), media_type="text/plain")


@app.post("/_mode")
async def set_mode(request: Request) -> dict[str, Any]:
    mode.update(await request.json())
    return mode


@app.get("/_count")
async def count() -> dict[str, int]:
    return dict(counts)


@app.post("/_reset")
async def reset() -> dict[str, int]:
    counts.clear()
    mode.update(status=200, delay=0.0, retry_after=None)
    return {}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
