"""The operations console's test rig: the real gateway (`create_app`) on a port, in front of a
small stand-in for auth's login (`POST /auth/login` signing tokens with a test key the
gateway's verifier trusts), both served by uvicorn in the test's own event loop, on the
session's Kafka. The real auth service needs its database and migrations; what the console
depends on is only its login route's contract (email and password in, `access_token` out)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from core.security import SigningKey, StaticKeySource, TokenVerifier
from devinfra.process import free_port
from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.fixed_registry import FixedRegistry
from tests.security_support import AUDIENCE, ISSUER, claims, sign

PASSWORD = "correct horse battery staple"
ADMIN = "admin@example.com"
USER = "user@example.com"
ACCOUNTS = {ADMIN: ("admin-1", ["users:read", "rbac:manage"]),
            USER: ("user-1", ["drivers:read"])}

ROUTES = """
[[routes]]
name = "auth-login"
prefix = "/api/auth/login"
service = "auth"
rewrite = "/auth/login"
methods = ["POST"]
public = true
rate_limit = "none"
"""


def auth_stand_in(key: SigningKey) -> Starlette:
    async def login(request: Request) -> JSONResponse:
        body = await request.json()
        account = ACCOUNTS.get(body.get("email"))
        if account is None or body.get("password") != PASSWORD:
            return JSONResponse({"error": {"code": "invalid_credentials"}}, status_code=401)
        subject, permissions = account
        token = sign(key, claims(sub=subject, permissions=permissions, email=body["email"],
                                 exp=int(time.time()) + 900))
        return JSONResponse({"access_token": token, "refresh_token": "r", "expires_in": 900,
                             "token_type": "Bearer"})

    async def ready(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ready", "checks": []})

    return Starlette(routes=[Route("/auth/login", login, methods=["POST"]),
                             Route("/health/ready", ready)])


@dataclass(frozen=True, slots=True)
class ConsoleStack:
    url: str
    """The gateway's base URL; the console is at `{url}/console`."""
    key: SigningKey

    def token(self, *, permissions: list[str], **overrides: Any) -> str:
        return sign(self.key, claims(permissions=permissions, **overrides))


@asynccontextmanager
async def serving(app: ASGIApp, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # its failure, raised here
            await asyncio.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def console_stack(bootstrap_servers: str) -> AsyncIterator[ConsoleStack]:
    key = SigningKey.generate("EdDSA", now=time.time())
    routes = Path(tempfile.mkdtemp()) / "routes.toml"
    routes.write_text(ROUTES)
    auth_port, gateway_port = free_port(), free_port()
    gateway = create_app(
        GatewaySettings(_env_file=None, gateway_routes_file=routes, legacy_upstream_url=None,
                        kafka_bootstrap_servers=bootstrap_servers,
                        gateway_health_interval=3600.0),
        registry=FixedRegistry({"auth": [f"http://127.0.0.1:{auth_port}"]}),
        verifier=TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                               audience=AUDIENCE))
    async with serving(auth_stand_in(key), auth_port), serving(gateway, gateway_port):
        yield ConsoleStack(f"http://127.0.0.1:{gateway_port}", key)
