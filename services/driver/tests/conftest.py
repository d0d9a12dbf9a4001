"""The driver service as it runs: its own process on SQLite and the session's Kafka, beside a
token issuer and a stand-in user service, started once per test module."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from core.config import KafkaConfig
from core.db import Database, migrations
from core.messaging import KafkaEventBus
from devinfra.process import free_port
from services.driver.events import (
    LOCATIONS_TOPIC,
    DriverLocationReported,
    LocationReportedData,
    driver_events,
)
from services.driver.main import SERVICE_DIR
from tests.helpers import IssuerProc, answers_ok, eventually, unique
from tests.helpers.service import ServiceProc, Spawn
from tests.integration.databases import BACKENDS, open_databases

ROOT = Path(__file__).resolve().parents[3]
USER_PERMISSIONS = ["profile:read", "profile:write", "drivers:register", "drivers:read",
                    "notifications:read"]
"""What the `user` role grants (services/README.md)."""
ADMIN_PERMISSIONS = [*USER_PERMISSIONS, "users:read", "users:write", "drivers:write",
                     "rbac:manage"]


@dataclass
class DriverStack:
    """The service under test and its neighbours."""

    service: ServiceProc
    user_url: str
    user_port: int
    kafka: KafkaConfig
    spawn: Spawn
    user_proc: subprocess.Popen[str]
    bus: KafkaEventBus | None = None
    _tokens: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)
    permissions: dict[str, list[str]] = field(default_factory=dict)
    """Permissions of subjects that are not plain users (for `new_driver`)."""

    async def token(self, sub: str, permissions: list[str] | None = None) -> str:
        perms = tuple(USER_PERMISSIONS if permissions is None else permissions)
        key = (sub, perms)
        if key not in self._tokens:
            self._tokens[key] = await self.service.token(sub, *perms)
        return self._tokens[key]

    async def client(self, sub: str | None = None,
                     permissions: list[str] | None = None) -> httpx.AsyncClient:
        headers = {}
        if sub is not None:
            headers["Authorization"] = f"Bearer {await self.token(sub, permissions)}"
        return self.service.client(headers, timeout=15)

    def client_with(self, token: str) -> httpx.AsyncClient:
        return self.service.client({"Authorization": f"Bearer {token}"}, timeout=15)

    async def add_profile(self, user_id: str) -> None:
        async with httpx.AsyncClient() as http:
            (await http.post(f"{self.user_url}/_profiles/{user_id}")).raise_for_status()

    async def new_driver(self, *, status: str = "offline",
                         user_id: str | None = None) -> tuple[str, str]:
        """A registered driver: (user id, driver id), in `status`."""
        user_id = user_id or str(uuid.uuid4())
        await self.add_profile(user_id)
        async with await self.client(user_id, self.permissions.get(user_id)) as http:
            created = await http.post("/drivers", json=driver_body())
            assert created.status_code == 201, created.text
            driver_id = str(created.json()["id"])
            path = ["available", "busy"][: ["offline", "available", "busy"].index(status)]
            for step in path:
                moved = await http.put(f"/drivers/{driver_id}/status", json={"status": step})
                assert moved.status_code == 200, moved.text
        return user_id, driver_id

    async def publish_location(self, driver_id: str, lat: float, lon: float,
                               recorded_at: datetime | None = None) -> None:
        """A device's report, straight to Kafka (not through the service)."""
        if self.bus is None:
            self.bus = KafkaEventBus(self.kafka, driver_events())
            await self.bus.producer.start()
        await self.bus.publish(LOCATIONS_TOPIC, DriverLocationReported(
            aggregate_id=driver_id, data=LocationReportedData(
                driver_id=driver_id, lat=lat, lon=lon,
                recorded_at=recorded_at or datetime.now(UTC))))


def driver_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "licence_number": f"DL-{uuid.uuid4().hex[:10].upper()}",
        "licence_expiry": "2031-01-31",
        "vehicle": {"make": "Toyota", "model": "Prius", "plate": "AB 123 CD",
                    "colour": "white", "year": 2022},
    }
    body.update(overrides)
    return body


async def start_user_standin(spawn: Spawn, port: int) -> subprocess.Popen[str]:
    proc = spawn("services.driver.tests.procs.user_standin", str(port))
    await eventually(lambda: answers_ok(f"http://127.0.0.1:{port}/_seen"), timeout=60, interval=0.1)
    return proc


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(kafka: Any, module_spawn: Spawn, issuer: IssuerProc,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DriverStack]:
    tmp = tmp_path_factory.mktemp("driver")
    user_port = free_port()
    user_proc = await start_user_standin(module_spawn, user_port)
    config = KafkaConfig(kafka.bootstrap_servers, unique("driver-test"), unique("group"))
    service = await ServiceProc.start(
        module_spawn, "services.driver", log=tmp / "driver.log", kafka=config, issuer=issuer,
        database_url=f"sqlite+aiosqlite:///{tmp / 'driver.db'}",
        env={"REGISTRY_BACKEND": "static",
             "REGISTRY_STATIC": f"user=http://127.0.0.1:{user_port}",
             "USER_CALL_TIMEOUT": "1", "STREAM_MAX_SECONDS": "8"})
    stack = DriverStack(service, f"http://127.0.0.1:{user_port}", user_port, config,
                        module_spawn, user_proc)
    yield stack
    if stack.bus is not None:
        await stack.bus.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=BACKENDS)
async def database(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    """The driver service's database, migrated, on SQLite and the real PostgreSQL: one per
    test module and backend."""
    async with open_databases(request, tmp_path_factory.mktemp("driver-db")) as factory:
        db = Database(await factory.new())
        await migrations.upgrade(SERVICE_DIR, db)
        yield db
        await db.dispose()
