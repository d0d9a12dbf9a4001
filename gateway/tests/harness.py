"""Real processes for the gateway's tests: stand-in upstreams, a token issuer, and the gateway
itself, started as `python -m gateway` is (settings from the environment)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from devinfra.process import free_port
from tests.helpers import IssuerProc, eventually
from tests.security_support import AUDIENCE, ISSUER

Spawn = Callable[..., subprocess.Popen[str]]


@dataclass
class Upstream:
    """One instance of `gateway.tests.procs.upstream`."""

    name: str
    port: int
    spawn: Spawn
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Upstream:
        self.proc = self.spawn("gateway.tests.procs.upstream", str(self.port), self.name)
        await eventually(self._answers, timeout=30, interval=0.1)
        return self

    async def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited"
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{self.url}/health/ready")).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    async def state(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            answer: dict[str, Any] = (await http.get(f"{self.url}/_seen")).json()
            return answer

    async def seen(self) -> list[dict[str, Any]]:
        requests: list[dict[str, Any]] = (await self.state())["requests"]
        return requests

    async def set_ready(self, ready: bool) -> None:
        async with httpx.AsyncClient() as http:
            await http.post(f"{self.url}/_control/ready/{int(ready)}")


def static_registry(upstreams: Mapping[str, list[Upstream]]) -> str:
    return ";".join(f"{name}={','.join(u.url for u in group)}"
                    for name, group in upstreams.items())


@dataclass
class Gateway:
    """`python -m gateway` with `routes` as its route table (TOML text)."""

    spawn: Spawn
    workdir: Path
    routes: str
    env: dict[str, str]
    port: int = 0
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def routes_file(self) -> Path:
        return self.workdir / "routes.toml"

    @property
    def log(self) -> Path:
        return self.workdir / f"gateway-{self.port}.log"

    async def start(self) -> Gateway:
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.routes_file.exists():
            self.routes_file.write_text(self.routes)
        env = {"SERVICE_PORT": str(self.port), "GATEWAY_ROUTES_FILE": str(self.routes_file),
               "GATEWAY_ROUTES_POLL_SECONDS": "0.2", "GATEWAY_HEALTH_INTERVAL": "0.5",
               "REGISTRY_BACKEND": "static", "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE,
               "GATEWAY_DEFAULT_RATE_LIMIT": "", **self.env}
        self.proc = self.spawn("gateway", env=env, output=self.log)
        await eventually(self._answers, timeout=60, interval=0.1)
        return self

    async def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the gateway exited:\n{self.log.read_text()[-3000:]}")
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{self.url}/health/live")).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(30)


async def start_issuer(spawn: Spawn, workdir: Path) -> IssuerProc:
    issuer = IssuerProc(f"http://127.0.0.1:{free_port()}", workdir / "keys", spawn)
    await issuer.start()
    return issuer
