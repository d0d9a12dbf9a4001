"""The notification service in its own process (PostgreSQL, the real broker, a real token
issuer, a recording sender), and a stand-in for the user service's side of request-reply:
the module-scoped world the process tests run in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from core.config import KafkaConfig
from core.db import Database
from core.messaging import BaseEvent, KafkaEventBus, RequestResponder, inbox_table
from services.notification.events import (
    AUTH_EVENTS,
    DRIVER_EVENTS,
    USER_EVENTS,
    USER_REQUESTS,
    GetContact,
    UserContact,
)
from services.notification.models import Base, Contact
from services.notification.senders import ContactDetails
from services.notification.tests.kafka_support import start_at_the_end
from services.notification.tests.recording_sender import sends
from services.notification.tests.support import contact_reply
from tests.helpers import IssuerProc, eventually, unique
from tests.helpers.service import ServiceProc
from tests.integration.databases import DatabaseFactory

TOPICS = {"auth": AUTH_EVENTS, "user": USER_EVENTS, "driver": DRIVER_EVENTS}
READ = ["notifications:read"]
CONTACT_TIMEOUT = 1.0
WAIT = 20.0


@dataclass
class World:
    """The service under test, the test's producer and a view of its database."""

    service: ServiceProc
    bus: KafkaEventBus
    database: Database
    sends_file: Path
    kafka: KafkaConfig

    async def publish(self, event: BaseEvent[Any]) -> None:
        await self.bus.publish(TOPICS[event.service_name], event)

    async def token(self, user_id: str, permissions: list[str] = READ, **claims: Any) -> str:
        return await self.service.token(user_id, *permissions, roles=["user"], **claims)

    async def get(self, user_id: str, path: str = "/notifications", **params: Any
                  ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {await self.token(user_id)}"}
        async with self.service.client() as http:
            return await http.get(path, params=params, headers=headers)

    async def post(self, path: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.service.client() as http:
            return await http.post(path, headers=headers)

    async def notifications(self, user_id: str) -> list[dict[str, Any]]:
        response = await self.get(user_id, size=100)
        assert response.status_code == 200, response.text
        return list(response.json()["data"])

    async def one(self, user_id: str, kind: str, status: str | None = None,
                  timeout: float = WAIT) -> dict[str, Any]:
        """The user's notification of `kind` once it exists (and has `status`)."""
        async def found() -> dict[str, Any] | None:
            for n in await self.notifications(user_id):
                if n["kind"] == kind and status in (None, n["delivery_status"]):
                    return n
            return None
        found_one: dict[str, Any] = await eventually(
            found, timeout, 0.1, what=f"{kind} notification for {user_id} ({status})",
            log=self.service.log)
        return found_one

    def sent_to(self, notification_id: str) -> list[dict[str, Any]]:
        return [s for s in sends(self.sends_file) if s["notification_id"] == notification_id]

    async def handled(self, event: BaseEvent[Any], handler: str) -> bool:
        inbox = inbox_table(Base.metadata)
        async with self.database.session() as session:
            return await session.scalar(select(inbox.c.event_id).where(
                inbox.c.event_id == str(event.event_id), inbox.c.handler == handler)) is not None

    async def contact_email(self, user_id: str) -> str | None:
        async with self.database.session() as session:
            return await session.scalar(select(Contact.email).where(Contact.user_id == user_id))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(kafka: Any, postgres: Any, module_spawn: Callable[..., Any], issuer: IssuerProc,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("notification")
    config = KafkaConfig(kafka.bootstrap_servers, unique("notification-test"), unique("group"))
    group = unique("notification")
    await start_at_the_end(config, group, TOPICS.values())
    databases = DatabaseFactory("postgres", tmp, postgres)
    url = await databases.new()
    sends_file = tmp / "sends.jsonl"
    service = await ServiceProc.start(
        module_spawn, "services.notification", log=tmp / "service.log", database_url=url,
        kafka=config, issuer=issuer, env={
        "KAFKA_CONSUMER_GROUP": group,
        "REGISTRY_BACKEND": "static", "REGISTRY_STATIC": "",
        "NOTIFICATION_SENDER": "services.notification.tests.recording_sender:recording",
        "RECORDING_SENDER_FILE": str(sends_file),
        "CONTACT_TIMEOUT": str(CONTACT_TIMEOUT),
        "DELIVERY_MAX_ATTEMPTS": "3", "DELIVERY_RETRY_DELAY": "0.2",
        "DELIVERY_RETRY_MAX_DELAY": "0.5", "DELIVERY_POLL_INTERVAL": "0.2",
    })
    bus = KafkaEventBus(config)
    await bus.producer.start()
    database = Database(url)
    try:
        yield World(service, bus, database, sends_file, config)
    finally:
        await bus.stop()
        await database.dispose()
        service.stop(grace=30)
        await databases.drop_all()


@pytest_asyncio.fixture(loop_scope="session")
async def stand_in_users(world: World) -> AsyncIterator[dict[str, ContactDetails]]:
    """The user service's side of `user.get_contact`: a `RequestResponder` on a real
    `KafkaEventBus`, answering from the returned dict."""
    known: dict[str, ContactDetails] = {}
    group = unique("users-standin")
    await start_at_the_end(world.kafka, group, [USER_REQUESTS])
    responder = RequestResponder()

    @responder.responds(GetContact)
    async def get_contact(request: GetContact) -> UserContact:
        return contact_reply(request, known)

    config = KafkaConfig(world.kafka.bootstrap_servers, unique("users-standin"), group)
    bus = KafkaEventBus(config, responder.handlers.events)
    responder.bind(bus.producer)
    consumer = bus.subscribe(USER_REQUESTS, responder.handlers)
    await bus.start()
    await consumer.wait_assigned()
    try:
        yield known
    finally:
        await bus.stop()


