"""The auth service as its tests run it: its own process (uvicorn, SQLite or PostgreSQL, the
test broker), its command line beside it on the same database and key folder, and a client;
one such process for the HTTP tests of this package (started once, on SQLite, beside the test
broker), and an admin made by the `create-admin` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from core.config import KafkaConfig
from tests.helpers import unique
from tests.helpers.service import ServiceProc
from tests.processes import Spawner

ROOT = Path(__file__).resolve().parents[3]
FAST_ARGON2 = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "1024"}
"""Tests hash cheaply (the parameters are settings); the benchmark measures the real ones."""
PASSWORD = "correct-Horse-7"


class AuthProc(ServiceProc):
    """A running auth service; `env` is what its commands share with it."""

    def cli(self, *args: str, stdin: str | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.auth.cli", *args], cwd=ROOT, input=stdin,
            env={**os.environ, **self.env, **(env or {}), "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=60, check=False)


@asynccontextmanager
async def running_auth(workdir: Path, kafka: Any, *, database_url: str | None = None,
                       env: Mapping[str, str] | None = None) -> AsyncIterator[AuthProc]:
    shared = {
        "DATABASE_URL": database_url or f"sqlite+aiosqlite:///{workdir / 'auth.db'}",
        "JWT_KEYS_DIR": str(workdir / "keys"),
        "JWT_KEYS_RELOAD_SECONDS": "0.5",
        "REGISTRY_BACKEND": "static",
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "ENVIRONMENT": "development",
        **FAST_ARGON2,
        **(env or {}),
    }
    spawner = Spawner()
    try:
        yield await AuthProc.start(
            spawner, "services.auth", log=workdir / "auth.log",
            database_url=shared["DATABASE_URL"], env=shared,
            kafka=KafkaConfig(kafka.bootstrap_servers, unique("auth"), unique("auth")))
    finally:
        spawner.close(grace=10)


async def register(http: httpx.AsyncClient, email: str | None = None,
                   password: str = PASSWORD) -> dict[str, Any]:
    response = await http.post("/auth/register", json={
        "email": email or f"{unique('u')}@example.com", "password": password})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await http.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def lines(output: str) -> dict[str, str]:
    """`key: value` lines of a command's output."""
    found = {}
    for line in output.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            found[key.strip()] = value.strip()
    return found


THROTTLE = {
    "ACCOUNT_SLOW_AFTER": "3", "ACCOUNT_LOCK_AFTER": "5", "LOGIN_SLOW_SECONDS": "0.5",
    "LOGIN_LOCK_SECONDS": "3",
    # Every test calls from 127.0.0.1: the per-client limit is tested on the store itself.
    "CLIENT_SLOW_AFTER": "10000", "CLIENT_LOCK_AFTER": "10000",
}


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def auth(kafka: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AuthProc]:
    async with running_auth(tmp_path_factory.mktemp("auth"), kafka, env=THROTTLE) as proc:
        yield proc


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def admin(auth: AuthProc) -> dict[str, Any]:
    """The first admin, from the command (its password on standard input), logged in."""
    done = auth.cli("create-admin", "--email", "root@example.com", "--password-stdin",
                    stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    async with auth.client() as http:
        tokens = await login(http, "root@example.com")
    return {"id": lines(done.stdout)["id"], **tokens}
