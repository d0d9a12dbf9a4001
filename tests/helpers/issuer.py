"""A token issuer as a process (tests/integration/procs/jwt_issuer.py): JWKS, `/issue` for any
claims, `/rotate`, client credentials. The `issuer` fixture (root conftest.py) shares one for the
session; a test that kills it, rotates its keys or counts its JWKS fetches starts its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.waiting import eventually
from tests.security_support import AUDIENCE, ISSUER

CLIENT_ID, CLIENT_SECRET = "driver-service", "driver-secret"


@dataclass
class IssuerProc:
    url: str
    keys_dir: Path
    spawn: Callable[..., Any]
    log: Path | None = None  # its output; a long-lived issuer must not write to an undrained pipe
    proc: Any = None

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    async def start(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        self.proc = self.spawn("tests.integration.procs.jwt_issuer", port, env={
            "KEYS_DIR": str(self.keys_dir), "ISSUER": ISSUER, "AUDIENCE": AUDIENCE,
            "CLIENT_ID": CLIENT_ID, "CLIENT_SECRET": CLIENT_SECRET, "TOKEN_TTL": "100"},
            output=self.log)
        await eventually(self._answers, timeout=60, interval=0.2)

    async def _answers(self) -> bool:
        assert self.proc.poll() is None, "the issuer exited"
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{self.url}/stats")).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.url) as http:
            response = await http.request(method, path, **kwargs)
            response.raise_for_status()
            return response.json()

    async def issue(self, sub: str = "user-1", **claims: Any) -> str:
        body = await self.call("POST", "/issue", json={"sub": sub, **claims})
        return str(body["token"])

    async def jwks_fetches(self) -> int:
        return int((await self.call("GET", "/stats"))["jwks"])
