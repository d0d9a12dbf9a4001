"""The running system as the end-to-end tests see it: each service's URL and small helpers
(register and log in a user, the admin's tokens, the services' databases), over a `Stack`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

from devinfra.postgres import PostgresServer
from devinfra.stack import AdminLogin, Stack
from tests.helpers import eventually

__all__ = ["Account", "System", "eventually", "started", "unwrap"]

PASSWORD = "correct-horse-battery-staple-42"


def unwrap(body: Any) -> Any:
    """A body's payload, with or without the standard envelope (`{"data": ..., "meta": ...}`)."""
    if isinstance(body, dict) and "data" in body and set(body) <= {"data", "meta", "message"}:
        return body["data"]
    return body


def items(body: Any) -> list[Any]:
    """The list in a list response: bare, enveloped, or under `items`/`results`."""
    body = unwrap(body)
    if isinstance(body, dict):
        for key in ("items", "results", "drivers", "notifications"):
            if isinstance(body.get(key), list):
                return list(body[key])
    assert isinstance(body, list), f"not a list response: {body!r}"
    return body


def ident(obj: Mapping[str, Any], *names: str) -> str:
    """The first of `names` (then `id`) that `obj` has: a driver's `driver_id` or `id`."""
    for name in (*names, "id"):
        if obj.get(name) is not None:
            return str(obj[name])
    raise AssertionError(f"no {names or 'id'} in {obj!r}")


def onboarding() -> dict[str, Any]:
    """A driver's licence and vehicle, as a client sends them (services/README.md)."""
    tag = uuid.uuid4().hex[:8].upper()
    return {"licence_number": f"LIC-{tag}",
            "licence_expiry": (date.today() + timedelta(days=400)).isoformat(),
            "vehicle": {"make": "Toyota", "model": "Prius", "plate": f"E2E {tag[:6]}",
                        "colour": "blue", "year": 2022}}


@dataclass
class Account:
    """A registered user and, once logged in, their tokens."""

    id: str
    email: str
    password: str
    access_token: str = ""
    refresh_token: str = ""
    roles: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class System:
    """The stack under test, and what tests do with it over HTTP."""

    stack: Stack

    @property
    def admin(self) -> AdminLogin:
        assert self.stack.admin is not None, "the stack created no admin"
        return self.stack.admin

    @property
    def bootstrap_servers(self) -> str:
        return self.stack.bootstrap_servers

    def url(self, service: str) -> str:
        return self.stack.url(service)

    def http(self, service: str, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url(service), headers=headers, timeout=15.0)

    def database_url(self, service: str) -> str:
        return self.stack.database_url(service)

    async def register(self, email: str | None = None, password: str = PASSWORD) -> Account:
        email = email or f"e2e-{uuid.uuid4().hex[:12]}@example.com"
        async with self.http("auth") as http:
            response = await http.post("/auth/register", json={"email": email,
                                                                "password": password})
        assert response.status_code == 201, response.text
        body = unwrap(response.json())
        assert body["email"] == email
        return Account(id=str(body["id"]), email=email, password=password,
                       roles=list(body.get("roles", [])))

    async def login(self, account: Account) -> Account:
        async with self.http("auth") as http:
            response = await http.post("/auth/login", json={"email": account.email,
                                                             "password": account.password})
        assert response.status_code == 200, response.text
        body = unwrap(response.json())
        account.access_token = body["access_token"]
        account.refresh_token = body["refresh_token"]
        return account

    async def user(self, *, with_profile: bool = False) -> Account:
        """A new user, logged in; with `with_profile`, once the user service has their
        profile (it arrives through Kafka)."""
        account = await self.login(await self.register())
        if with_profile:
            await self.profile(account)
        return account

    async def admin_account(self) -> Account:
        account = Account(id="", email=self.admin.email, password=self.admin.password)
        await self.login(account)
        async with self.http("auth", account.access_token) as http:
            response = await http.get("/auth/me")
        assert response.status_code == 200, response.text
        account.id = ident(unwrap(response.json()), "user_id")
        return account

    async def profile(self, account: Account, timeout: float = 30.0) -> dict[str, Any]:
        """The user's own profile, once the user service has made it."""
        async with self.http("user", account.access_token) as http:
            async def fetch() -> dict[str, Any] | None:
                response = await http.get("/users/me")
                assert response.status_code in (200, 404), response.text
                return unwrap(response.json()) if response.status_code == 200 else None

            found: dict[str, Any] = await eventually(fetch, timeout=timeout, interval=0.2)
        return found

    async def restart(self, service: str) -> None:
        await asyncio.to_thread(self.stack.restart, service)


@asynccontextmanager
async def started(stack: Stack, postgres: PostgresServer) -> AsyncIterator[System]:
    """`stack` started, as a `System`; at the end stopped, and every database it made on
    the session's PostgreSQL dropped (the server outlives the package)."""
    try:
        stack.start()
        yield System(stack)
    finally:
        stack.close()
        if postgres.running:
            conn = await asyncpg.connect(postgres.dsn)
            try:
                for spec in stack.services:
                    name = stack.database_name(spec.name)
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()
