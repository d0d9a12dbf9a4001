"""The order service as it runs: its own process on SQLite beside the real driver service (the
ride saga's participant, its own process and database), a stand-in user service (the driver
service checks profiles at onboarding), the session's token issuer and Kafka; started once
per test module."""

from __future__ import annotations

import random
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from core.config import KafkaConfig
from devinfra.process import free_port
from tests.helpers import IssuerProc, answers_ok, eventually, unique
from tests.helpers.service import ServiceProc, Spawn

USER_PERMISSIONS = ["drivers:register", "drivers:read", "orders:place", "orders:read"]
"""What the `user` role grants that these tests use (services/README.md)."""
ADMIN_PERMISSIONS = [*USER_PERMISSIONS, "drivers:write", "orders:manage", "sagas:read",
                     "sagas:write"]
FINAL = ("confirmed", "rejected", "cancelled", "completed")
KM_PER_DEGREE_LAT = 111.2


def somewhere() -> tuple[float, float]:
    """A random spot, so tests (and commands replayed from earlier ones) share no
    neighbourhood."""
    return random.uniform(-60, 60), random.uniform(-170, 170)


def order_body(lat: float, lon: float) -> dict[str, Any]:
    return {"pickup": {"lat": lat, "lon": lon}, "dropoff": {"lat": lat + 0.05, "lon": lon}}


@dataclass
class OrderStack:
    """The order service under test and its neighbours."""

    order: ServiceProc
    driver: ServiceProc
    user_url: str
    spawn: Spawn
    database_url: str
    """The order service's database (its read models, for the rebuild tests)."""
    bootstrap_servers: str
    _tokens: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)

    async def token(self, sub: str, permissions: list[str] | None = None) -> str:
        perms = tuple(USER_PERMISSIONS if permissions is None else permissions)
        if (sub, perms) not in self._tokens:
            self._tokens[(sub, perms)] = await self.order.token(sub, *perms)
        return self._tokens[(sub, perms)]

    async def orders(self, sub: str, permissions: list[str] | None = None
                     ) -> httpx.AsyncClient:
        token = await self.token(sub, permissions)
        return self.order.client({"Authorization": f"Bearer {token}"}, timeout=20)

    async def drivers(self, sub: str, permissions: list[str] | None = None
                      ) -> httpx.AsyncClient:
        token = await self.token(sub, permissions)
        return self.driver.client({"Authorization": f"Bearer {token}"}, timeout=20)

    async def available_driver(self, lat: float, lon: float) -> tuple[str, str]:
        """A registered driver, available at (lat, lon): (user id, driver id)."""
        user_id = str(uuid.uuid4())
        async with httpx.AsyncClient() as http:
            (await http.post(f"{self.user_url}/_profiles/{user_id}")).raise_for_status()
        async with await self.drivers(user_id) as http:
            created = await http.post("/drivers", json=driver_body())
            assert created.status_code == 201, created.text
            driver_id = str(created.json()["id"])
            moved = await http.put(f"/drivers/{driver_id}/status", json={"status": "available"})
            assert moved.status_code == 200, moved.text
            placed = await http.put(f"/drivers/{driver_id}/location",
                                    json={"lat": lat, "lon": lon})
            assert placed.status_code == 200, placed.text
        return user_id, driver_id

    async def driver_status(self, driver_id: str) -> str:
        async with await self.drivers("reader") as http:
            response = await http.get(f"/drivers/{driver_id}")
        assert response.status_code == 200, response.text
        return str(response.json()["status"])

    async def place(self, passenger: str, lat: float, lon: float) -> dict[str, Any]:
        async with await self.orders(passenger) as http:
            response = await http.post("/orders", json=order_body(lat, lon))
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    async def get(self, sub: str, order_id: str,
                  permissions: list[str] | None = None) -> httpx.Response:
        async with await self.orders(sub, permissions) as http:
            return await http.get(f"/orders/{order_id}")

    async def settled(self, passenger: str, order_id: str, *statuses: str,
                      timeout: float = 60) -> dict[str, Any]:
        """The order once its status is one of `statuses` (default: any final one)."""
        wanted = statuses or FINAL

        async def fetch() -> dict[str, Any] | None:
            response = await self.get(passenger, order_id)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body if body["status"] in wanted else None

        found: dict[str, Any] = await eventually(fetch, timeout=timeout, interval=0.2)
        return found


def driver_body() -> dict[str, Any]:
    return {"licence_number": f"DL-{uuid.uuid4().hex[:10].upper()}",
            "licence_expiry": "2031-01-31",
            "vehicle": {"make": "Toyota", "model": "Prius", "plate": "AB 123 CD",
                        "colour": "white", "year": 2022}}


async def start_order_stack(spawn: Spawn, kafka: Any, issuer: IssuerProc, tmp: Path,
                            **order_env: str) -> OrderStack:
    user_port = free_port()
    user_proc: subprocess.Popen[str] = spawn("services.driver.tests.procs.user_standin",
                                             str(user_port))
    user_url = f"http://127.0.0.1:{user_port}"
    await eventually(lambda: answers_ok(f"{user_url}/_seen"), timeout=60, interval=0.1)
    assert user_proc.poll() is None
    config = KafkaConfig(kafka.bootstrap_servers, unique("order-test"), unique("group"))
    driver = await ServiceProc.start(
        spawn, "services.driver", log=tmp / "driver.log", kafka=config, issuer=issuer,
        database_url=f"sqlite+aiosqlite:///{tmp / 'driver.db'}",
        env={"REGISTRY_BACKEND": "static", "REGISTRY_STATIC": f"user={user_url}"})
    database_url = f"sqlite+aiosqlite:///{tmp / 'order.db'}"
    order = await ServiceProc.start(
        spawn, "services.order", log=tmp / "order.log", kafka=config, issuer=issuer,
        database_url=database_url,
        env={"REGISTRY_BACKEND": "static", "PICKUP_RADIUS_KM": "5", **order_env})
    return OrderStack(order, driver, user_url, spawn, database_url, kafka.bootstrap_servers)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(kafka: Any, module_spawn: Spawn, issuer: IssuerProc,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OrderStack]:
    yield await start_order_stack(module_spawn, kafka, issuer, tmp_path_factory.mktemp("order"))
