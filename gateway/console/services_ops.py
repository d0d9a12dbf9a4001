"""The console's calls to the services' own operations APIs, through the gateway's service
client (balancing, breakers, timeouts) with the operator's token, which each service checks
itself: parked outbox rows (`/ops/outbox/...`, core.http.ops, on every service that checks
tokens) and sagas (`/sagas`, core.saga.saga_admin_router, on the services that run them). The
gateway never opens a service's database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from core.http import ServiceClient
from gateway.routes import LEGACY, RouteTable

TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Answer:
    """One service's answer: its JSON body, or why there is none (`missing`: the service
    does not offer this API)."""

    body: Any = None
    error: str | None = None
    missing: bool = False


class ServiceOps:
    def __init__(self, client: ServiceClient, table: Callable[[], RouteTable]) -> None:
        self._client = client
        self._table = table

    def services(self) -> list[str]:
        return sorted(self._table().services - {LEGACY})

    def known(self, service: str) -> bool:
        return service in self.services()

    async def each(self, path: str, token: str,
                   params: dict[str, Any] | None = None) -> dict[str, Answer]:
        """`GET path` at every routed service at once."""
        names = self.services()
        found = await asyncio.gather(*(self.call("GET", n, path, token, params=params)
                                       for n in names))
        return dict(zip(names, found, strict=True))

    async def call(self, method: str, service: str, path: str, token: str, *,
                   params: dict[str, Any] | None = None, json: Any = None) -> Answer:
        try:
            response = await self._client.request(
                method, service, path, params=params,
                headers={"Authorization": f"Bearer {token}"},
                timeout=TIMEOUT, attempts=1 if method != "GET" else None,
                **({"json": json} if json is not None else {}))
        except Exception as exc:  # no instance, breaker open, timeout: shown, not raised
            return Answer(error=f"{type(exc).__name__}: {exc}")
        if response.status_code == 404 and method == "GET":
            return Answer(missing=True)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            message = body.get("error", {}).get("message") if isinstance(body, dict) else None
            return Answer(body=body, error=f"{response.status_code}: {message or response.text}")
        return Answer(body=body)


def saga_path(saga_id: str, action: str = "") -> str:
    return f"/sagas/{quote(saga_id, safe='')}{action}"
