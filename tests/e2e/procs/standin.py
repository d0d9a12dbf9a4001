"""`python -m tests.e2e.procs.standin`: a stand-in for a service, to test `devinfra.stack.Stack`.

Configured as a real service is (SERVICE_NAME, SERVICE_PORT, DATABASE_URL, ...), it answers
`/health/live`, `/health/ready` and `/metrics`, shows the environment it got at `GET /env`,
and, as auth, logs in the users its CLI (`standin_cli`) wrote. `STANDIN_MODE` makes it misbehave:

- `exit`: prints a reason and exits with code 3 before serving;
- `never_ready`: `/health/ready` answers 503 for ever;
- `stubborn`: ignores SIGTERM (the stack must SIGKILL it).

`STANDIN_READY_AFTER` (seconds, counted from the first readiness probe, so a slow start does
not eat it) delays readiness: the stack must keep asking.
"""

# ruff: noqa: E402  (STARTED is taken before the slow imports)
from __future__ import annotations

import time

STARTED = time.time()  # before the other imports: as close to the launch as Python gets

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Response

from tests.e2e.procs.standin_cli import users_file

NAME = os.environ.get("SERVICE_NAME", "standin")
MODE = os.environ.get("STANDIN_MODE", "ok")
READY_AFTER = float(os.environ.get("STANDIN_READY_AFTER", "0"))
SHOWN = ("SERVICE_NAME", "SERVICE_HOST", "SERVICE_PORT", "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS",
         "KAFKA_CONSUMER_GROUP", "JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE", "JWT_KEYS_DIR",
         "REDIS_URL", "ENVIRONMENT", "AUTH_TOKEN_URL", "REGISTRY_SIGNING_KEY_FILE",
         "REGISTRY_ALLOWED_NETWORKS")
state: dict[str, Any] = {"database": None, "first_probe": None, "first_ready": None}


async def _current_database(url: str) -> str:
    """Proves a PostgreSQL DATABASE_URL works: which database it lands in."""
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SELECT current_database()"))
    finally:
        await conn.close()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgresql"):
        state["database"] = await _current_database(url)
    if MODE == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # after uvicorn installed its handler
    print(f"standin {NAME} serving on port {os.environ.get('SERVICE_PORT')}", flush=True)
    yield
    print(f"standin {NAME} stopped cleanly", flush=True)


app = FastAPI(lifespan=lifespan)


@app.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/health/ready")
async def ready(response: Response) -> dict[str, str]:
    now = time.time()
    state["first_probe"] = state["first_probe"] or now
    if MODE == "never_ready" or now - state["first_probe"] < READY_AFTER:
        response.status_code = 503
        return {"status": "starting", "reason": "the stand-in is not ready yet"}
    state["first_ready"] = state["first_ready"] or now
    return {"status": "ok"}


@app.get("/env")
async def env() -> dict[str, Any]:
    shown: dict[str, Any] = {key: os.environ.get(key) for key in SHOWN}
    return {**shown, **state, "started": STARTED, "pid": os.getpid()}


@app.get("/metrics")
async def metrics() -> Response:
    """What every service exposes at the least (so a Prometheus scraping the stack sees it up)."""
    return Response(f'kfm_service_info{{version="standin-{NAME}"}} 1\n',
                    media_type="text/plain; version=0.0.4")


@app.post("/auth/login")
async def login(body: dict[str, str], response: Response) -> dict[str, str]:
    path = users_file()
    users = json.loads(path.read_text()) if path.exists() else {}
    if users.get(body.get("email")) != body.get("password"):
        response.status_code = 401
        return {"detail": "invalid credentials"}
    return {"access_token": "standin", "token_type": "bearer"}


def main() -> None:
    if MODE == "exit":
        print(f"standin {NAME}: cannot open the database: the disk is on fire", flush=True)
        sys.exit(3)
    asyncio.run(uvicorn.Server(uvicorn.Config(
        app, host=os.environ.get("SERVICE_HOST", "127.0.0.1"),
        port=int(os.environ["SERVICE_PORT"]), log_level="warning")).serve())


if __name__ == "__main__":
    main()
