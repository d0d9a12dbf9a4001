"""The user service's test rig: its process (on SQLite, and on PostgreSQL with Redis), a token
issuer and a Kafka client of the test's own (publishing as auth does, reading what the service
publishes), once per module; and a recording outbox for the in-process tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncSession

from core.config import KafkaConfig
from core.messaging import (
    BaseEvent,
    EventRegistry,
    KafkaAdmin,
    KafkaEventBus,
    MessageContext,
    RequestReplyClient,
)
from services.user.events import (
    AUTH_EVENTS,
    USER_EVENTS,
    USER_REQUESTS,
    Contact,
    ProfileCreated,
    ProfileUpdated,
    UserRegistered,
    UserRegisteredData,
)
from tests.helpers import IssuerProc, eventually, unique
from tests.helpers.service import ServiceProc
from tests.integration.databases import BACKENDS, DatabaseFactory

ROOT = Path(__file__).resolve().parents[3]
DLQ = f"{AUTH_EVENTS}.dlq"
EVERY_PERMISSION = ["profile:read", "profile:write", "users:read", "users:write"]


@dataclass
class Wire:
    """The test's own Kafka client: publishes as auth does, records what lands on
    `user.events` and on auth's dead-letter topic, and asks `user.requests`."""

    config: KafkaConfig
    bus: KafkaEventBus
    requests: RequestReplyClient
    seen: list[tuple[str, BaseEvent[Any]]] = field(default_factory=list)

    async def register(self, user_id: str, email: str, *, key: str | None = None,
                       event: UserRegistered | None = None) -> UserRegistered:
        """Publish `auth.user_registered` the way auth does (its envelope, keyed by user)."""
        event = event or UserRegistered(
            data=UserRegisteredData(user_id=user_id, email=email, roles=["user"]), key=user_id)
        await self.bus.publish(AUTH_EVENTS, event, key=key)
        return event

    def on(self, topic: str, event_cls: type[BaseEvent[Any]],
           user_id: str) -> list[BaseEvent[Any]]:
        return [e for t, e in self.seen if t == topic and isinstance(e, event_cls)
                and getattr(e.data, "user_id", None) == user_id]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def wire(kafka: Any) -> AsyncIterator[Wire]:
    config = KafkaConfig(kafka.bootstrap_servers, unique("user-test"), unique("user-test"))
    events = EventRegistry()
    for cls in (UserRegistered, ProfileCreated, ProfileUpdated, Contact):
        events.register(cls)
    await KafkaAdmin(config).create_topics([AUTH_EVENTS, USER_EVENTS, USER_REQUESTS, DLQ])
    bus = KafkaEventBus(config, events)
    wire = Wire(config, bus, RequestReplyClient(config, bus.producer, events,
                                                instance_id=unique("user-test")))

    async def record(event: BaseEvent[Any], ctx: MessageContext) -> None:
        wire.seen.append((ctx.record.topic, event))

    bus.subscribe([USER_EVENTS, DLQ], record)
    await bus.start()
    await wire.requests.start()
    yield wire
    await wire.requests.stop()
    await bus.stop()


@dataclass
class Service(ServiceProc):
    """The user service running as its own process, and how to call it."""

    redis_url: str | None = None

    async def call(self, method: str, path: str, headers: dict[str, str] | None = None,
                   **kwargs: Any) -> httpx.Response:
        async with self.client() as http:
            return await http.request(method, path, headers=headers, **kwargs)

    async def admin(self) -> dict[str, str]:
        return await self.bearer(unique("admin"), *EVERY_PERMISSION)

    async def profile_of(self, user_id: str) -> dict[str, Any] | None:
        """The profile as an admin reads it, or None while there is none."""
        response = await self.call("GET", f"/users/{user_id}", await self.admin())
        assert response.status_code in (200, 404), response.text
        return response.json()["data"] if response.status_code == 200 else None


async def start_service(spawn: Callable[..., Any], issuer: IssuerProc, wire: Wire, tmp: Path,
                        database_url: str, redis_url: str | None = None) -> Service:
    env = {"REGISTRY_BACKEND": "static", "REGISTRY_STATIC": ""}
    if redis_url:
        env["REDIS_URL"] = redis_url
    return await Service.start(spawn, "services.user", log=tmp / "user.log",
                               database_url=database_url, kafka=wire.config, issuer=issuer,
                               env=env, redis_url=redis_url)


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=BACKENDS)
async def service(request: pytest.FixtureRequest, module_spawn: Callable[..., Any],
                  issuer: Any, wire: Wire,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    postgres = request.param == "postgres"
    tmp = tmp_path_factory.mktemp(request.param)
    databases = DatabaseFactory(request.param, tmp,
                                request.getfixturevalue("postgres") if postgres else None)
    redis_url = request.getfixturevalue("redis").url if postgres else None
    running = await start_service(module_spawn, issuer, wire, tmp, await databases.new(),
                                  redis_url)
    yield running
    running.stop()  # before the next backend's: both would consume auth's events
    await databases.drop_all()


async def registered(service: Service, wire: Wire, user_id: str, email: str) -> dict[str, Any]:
    """Register `user_id` through auth's topic and wait for its profile."""
    await wire.register(user_id, email)
    return await eventually(lambda: service.profile_of(user_id), interval=0.1)


async def settle(seconds: float = 0.5) -> None:
    """A short wait for something that must NOT happen (a second event)."""
    await asyncio.sleep(seconds)


class RecordingOutbox:
    """An EventOutbox that keeps what it was given (the real one writes a row)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, BaseEvent[Any]]] = []

    async def add(self, session: AsyncSession, topic: str, event: BaseEvent[Any], *,
                  key: str | None = None) -> None:
        self.events.append((topic, event))
