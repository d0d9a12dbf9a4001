"""The handlers and the delivery task in one process, on a migrated database of a test's
choosing: the in-memory bus delivers events through the real inbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select

from core.app import OUTBOX_WRITER
from core.db import Database, migrations
from core.messaging import BaseEvent, DatabaseIdempotencyStore, InMemoryEventBus, OutboxWriter
from core.resilience import RetryPolicy
from services.notification.contacts import DIRECTORY, ContactBook, ContactDirectory
from services.notification.delivery import DELIVERY, DeliveryPolicy
from services.notification.events import AUTH_EVENTS, DRIVER_EVENTS, USER_EVENTS
from services.notification.handlers import events, handlers
from services.notification.main import SERVICE_DIR
from services.notification.models import Base, Contact, Notification, outbox
from services.notification.senders import ContactDetails, Outgoing
from services.notification.tests.support import StandInUsers, new_user, password_changed
from tests.integration.databases import BACKENDS, DatabaseFactory, open_databases

TOPICS = {"auth": AUTH_EVENTS, "user": USER_EVENTS, "driver": DRIVER_EVENTS}


@pytest.fixture(params=BACKENDS)
async def databases(request: pytest.FixtureRequest, tmp_path: Any
                    ) -> AsyncIterator[DatabaseFactory]:
    async with open_databases(request, tmp_path) as factory:
        yield factory


@pytest.fixture
async def database(databases: DatabaseFactory) -> AsyncIterator[Database]:
    db = Database(await databases.new())
    await migrations.upgrade(SERVICE_DIR, db)
    yield db
    await db.dispose()


@dataclass
class Harness:
    database: Database
    bus: InMemoryEventBus
    users: StandInUsers
    wakes: list[int] = field(default_factory=list)

    def wake(self) -> None:
        """The delivery task's part for the handlers (`DELIVERY`): counts the wakes."""
        self.wakes.append(1)

    async def publish(self, event: BaseEvent[Any]) -> None:
        await self.bus.publish(TOPICS[event.service_name], event)

    async def notifications(self, user_id: str) -> list[Notification]:
        async with self.database.session() as session:
            rows = await session.scalars(select(Notification).where(
                Notification.user_id == user_id).order_by(Notification.created_at))
            return list(rows)

    async def contact(self, user_id: str) -> ContactDetails | None:
        async with self.database.session() as session:
            return await ContactBook(session).get(user_id)

    async def count(self, what: Any) -> int:
        async with self.database.session() as session:
            return int(await session.scalar(select(func.count()).select_from(what)) or 0)

    async def outbox_rows(self) -> list[Any]:
        async with self.database.session() as session:
            return list((await session.execute(select(outbox).order_by(outbox.c.id))).all())

    async def add_contact(self, user_id: str, email: str) -> None:
        async with self.database.transaction() as session:
            session.add(Contact(user_id=user_id, email=email, display_name="Ada"))


def harness(database: Database, timeout: float = 0.2) -> Harness:
    bus = InMemoryEventBus(events, idempotency=DatabaseIdempotencyStore(database, Base.metadata),
                           service_name="notification")
    bus.subscribe(tuple(TOPICS.values()), handlers)
    users = StandInUsers()
    made = Harness(database, bus, users)
    bus.runtime.add(OUTBOX_WRITER, OutboxWriter(Base.metadata, bus.serializer))
    bus.runtime.add(DIRECTORY, ContactDirectory(users, timeout))
    bus.runtime.add(DELIVERY, made)
    return made


# -- the delivery task's helpers --------------------------------------------------------------
@dataclass
class Flaky:
    """Fails the first `failures` sends of each notification; records every call."""

    failures: int = 0
    delay: float = 0.0
    channel: str = "test"
    calls: list[tuple[Outgoing, ContactDetails]] = field(default_factory=list)

    async def send(self, notification: Outgoing, contact: ContactDetails) -> None:
        self.calls.append((notification, contact))
        await asyncio.sleep(self.delay)
        if notification.attempt <= self.failures:
            raise ConnectionError(f"mail server down (attempt {notification.attempt})")


def policy(attempts: int = 3, **options: Any) -> DeliveryPolicy:
    return DeliveryPolicy(retry=RetryPolicy(max_attempts=attempts, initial_delay=0,
                                            max_delay=0, jitter=False), **options)


async def one_due(h: Harness, email: str = "ada@example.com") -> Notification:
    user = new_user()
    await h.add_contact(user, email)
    await h.publish(password_changed(user))
    [notification] = await h.notifications(user)
    return notification


async def reread(h: Harness, notification: Notification) -> Notification:
    [row] = await h.notifications(notification.user_id)
    return row
