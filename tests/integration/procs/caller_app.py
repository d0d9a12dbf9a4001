"""`python -m tests.integration.procs.caller_app PORT`: service A of the service-client tests.
It calls the services in `UPSTREAMS` (`name=url,url;name=url`) with a `ServiceClient` that
forwards the caller's identity, behind the request-context middleware and the standard error
handlers, so a failing upstream answers 502/503/504 the way a real service would."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from core.bases.errors import install_exception_handlers
from core.http import ClientConfig, ForwardCaller, ServiceClient, install_request_context
from core.resilience import RetryPolicy
from tests.fixed_registry import FixedRegistry

client = ServiceClient(
    FixedRegistry.from_spec(os.environ["UPSTREAMS"]), auth=ForwardCaller(),
    config=ClientConfig(timeout=0.5, deadline=1.5,
                        retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05)))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await client.aclose()


app = FastAPI(lifespan=lifespan)
install_exception_handlers(app)
install_request_context(app)


@app.get("/relay/{service}/{path:path}")
async def relay(service: str, path: str) -> JSONResponse:
    response = await client.get(service, f"/{path}")
    return JSONResponse(response.json(), status_code=response.status_code)


@app.get("/_count")
async def ready() -> dict[str, str]:
    return {}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
