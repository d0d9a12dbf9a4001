"""A service under test as its own process (`python -m MODULE PORT`, uvicorn inside, as
deployed), configured by the environment, on a database and the test broker of the caller's
choosing: `serve` starts one; `ServiceProc` adds a client, tokens from the issuer it trusts,
its log and a clean stop."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from core.config import KafkaConfig
from devinfra.process import free_port
from tests.helpers.events import unique
from tests.helpers.issuer import IssuerProc
from tests.helpers.waiting import eventually, tail
from tests.security_support import AUDIENCE, ISSUER

Spawn = Callable[..., subprocess.Popen[str]]


@dataclass(frozen=True, slots=True)
class Served:
    """A running service: where it answers and its process."""

    base_url: str
    proc: subprocess.Popen[str]


async def serve(
    spawn: Spawn,
    module: str,
    *,
    database_url: str,
    kafka: KafkaConfig,
    ready_path: str = "/openapi.json",
    env: Mapping[str, str] | None = None,
    output: Path | None = None,
    timeout: float = 60,
) -> Served:
    """Start `module` on a free port in development mode (it migrates its fresh database) and
    wait until `ready_path` answers 200: uvicorn answers only once the app's lifespan (database,
    topics, consumer, relay) has started. `output` receives the process's log, see `spawn`."""
    port = free_port()
    proc = spawn(module, str(port), output=output, env={
        "SERVICE_PORT": str(port),
        "ENVIRONMENT": "development",
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_CONSUMER_GROUP": unique(module.rsplit(".", 1)[-1]),
        **(env or {}),
    })
    served = Served(f"http://127.0.0.1:{port}", proc)
    await eventually(lambda: _answers(served, ready_path), timeout=timeout, interval=0.2)
    return served


async def _answers(served: Served, path: str) -> bool:
    assert served.proc.poll() is None, f"the service exited with {served.proc.returncode}"
    try:
        async with httpx.AsyncClient(base_url=served.base_url) as http:
            return (await http.get(path)).status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class ServiceProc:
    url: str
    proc: subprocess.Popen[str]
    log: Path
    issuer: IssuerProc | None = None
    env: dict[str, str] = field(default_factory=dict)
    """The environment it was started with (beyond the launcher's own), for its CLI."""

    @classmethod
    async def start(cls, spawn: Spawn, module: str, *, log: Path, database_url: str,
                    kafka: KafkaConfig, issuer: IssuerProc | None = None,
                    env: Mapping[str, str] | None = None, **fields: Any) -> Self:
        """Start `module` (see `serve`) trusting `issuer`'s tokens; `fields` are a subclass's."""
        full = dict(env or {})
        if issuer is not None:
            full = {"JWKS_URL": issuer.jwks_url, "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE,
                    **full}
        served = await serve(spawn, module, database_url=database_url, kafka=kafka, env=full,
                             output=log)
        return cls(served.base_url, served.proc, log, issuer, full, **fields)

    async def token(self, sub: str, *permissions: str, **claims: Any) -> str:
        assert self.issuer is not None, "started without an issuer"
        return await self.issuer.issue(sub, permissions=list(permissions), **claims)

    async def bearer(self, sub: str, *permissions: str, **claims: Any) -> dict[str, str]:
        """Authorization headers for `sub` holding `permissions`."""
        return {"Authorization": f"Bearer {await self.token(sub, *permissions, **claims)}"}

    def client(self, headers: Mapping[str, str] | None = None,
               timeout: float = 10) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)

    def stop(self, grace: float = 20) -> None:
        """SIGTERM, as a deployment stops it (a clean drain), then wait; a service that does
        not drain within `grace` is killed and fails the test."""
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
