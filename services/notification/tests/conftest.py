"""The notification service's test rig: events as the other services publish them and a
stand-in for the user service's side of request-reply; the handlers and the delivery task in
one process on a migrated database of a test's choosing (the in-memory bus delivers events
through the real inbox); and the service in its own process (PostgreSQL, the real broker, a
real token issuer, the recording sender of procs/recording_sender.py), the module-scoped
world the HTTP and contract tests run in."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from confluent_kafka import Consumer, KafkaException, TopicPartition
from sqlalchemy import func, select

from core.app import OUTBOX_WRITER
from core.config import KafkaConfig
from core.db import Database, migrations
from core.messaging import (
    BaseEvent,
    DatabaseIdempotencyStore,
    DomainEvent,
    InMemoryEventBus,
    KafkaAdmin,
    KafkaEventBus,
    OutboxWriter,
    RequestResponder,
    RequestTimeoutError,
    inbox_table,
)
from core.resilience import RetryPolicy
from services.notification.contacts import DIRECTORY, ContactBook, ContactDirectory
from services.notification.delivery import DELIVERY, DeliveryPolicy
from services.notification.events import (
    AUTH_EVENTS,
    DRIVER_EVENTS,
    USER_EVENTS,
    USER_REQUESTS,
    ContactData,
    DriverRegistered,
    DriverRegisteredData,
    DriverStatusChanged,
    DriverStatusChangedData,
    GetContact,
    PasswordChanged,
    PasswordChangedData,
    ProfileCreated,
    ProfileData,
    ProfileUpdated,
    UserContact,
    UserRegistered,
    UserRegisteredData,
)
from services.notification.handlers import events, handlers
from services.notification.main import SERVICE_DIR
from services.notification.models import Base, Contact, Notification, outbox
from services.notification.senders import ContactDetails, Outgoing
from services.notification.tests.procs.recording_sender import sends
from tests.helpers import IssuerProc, eventually, unique
from tests.helpers.service import ServiceProc
from tests.integration.databases import BACKENDS, DatabaseFactory, open_databases

TOPICS = {"auth": AUTH_EVENTS, "user": USER_EVENTS, "driver": DRIVER_EVENTS}


# -- events as the other services would publish them, and the user service in memory ---------
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new_user() -> str:
    return str(uuid.uuid4())


def registered(user_id: str, email: str = "new@example.com") -> UserRegistered:
    return UserRegistered(service_name="auth", key=user_id,
                          data=UserRegisteredData(user_id=user_id, email=email, roles=["user"]))


def password_changed(user_id: str) -> PasswordChanged:
    return PasswordChanged(service_name="auth", key=user_id,
                           data=PasswordChangedData(user_id=user_id))


def profile_created(user_id: str, email: str, *, at: datetime = T0,
                    name: str = "Ada") -> ProfileCreated:
    return ProfileCreated(service_name="user", key=user_id, timestamp=at,
                          data=ProfileData(user_id=user_id, email=email, display_name=name))


def profile_updated(user_id: str, email: str, *, at: datetime,
                    name: str = "Ada") -> ProfileUpdated:
    return ProfileUpdated(service_name="user", key=user_id, timestamp=at,
                          data=ProfileData(user_id=user_id, email=email, display_name=name))


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def driver_registered(user_id: str) -> DriverRegistered:
    driver_id = str(uuid.uuid4())
    return DriverRegistered(service_name="driver", key=driver_id, data=DriverRegisteredData(
        driver_id=driver_id, user_id=user_id, licence_number="L-123"))


def driver_status_changed(user_id: str, new: str = "available") -> DriverStatusChanged:
    driver_id = str(uuid.uuid4())
    return DriverStatusChanged(service_name="driver", key=driver_id, data=DriverStatusChangedData(
        driver_id=driver_id, user_id=user_id, old="offline", new=new))


def contact_reply(request: GetContact, known: dict[str, ContactDetails]) -> UserContact:
    """The user service's answer to `request`, from `known`."""
    user_id = request.data.user_id
    details = known.get(user_id)
    data = ContactData(user_id=user_id, found=details is not None,
                       email=details.email if details else None,
                       display_name=details.display_name if details else None,
                       phone=details.phone if details else None)
    return request.caused(UserContact, data, key=user_id)


class StandInUsers:
    """A `Requester` that answers like the user service, in memory; silent (a timeout) for
    users in `silent`."""

    def __init__(self) -> None:
        self.known: dict[str, ContactDetails] = {}
        self.silent: set[str] = set()
        self.asked: list[str] = []

    async def send_request(self, topic: str, request: BaseEvent[Any], timeout: float, *,
                           key: str | None = None) -> BaseEvent[Any]:
        assert topic == "user.requests" and isinstance(request, GetContact)
        assert key == request.data.user_id
        self.asked.append(request.data.user_id)
        if request.data.user_id in self.silent:
            raise RequestTimeoutError(f"no reply within {timeout}s")
        return contact_reply(request, self.known)


class AuthUserRegistered(DomainEvent[UserRegisteredData]):
    """`auth.user_registered` as the auth service may declare it (a domain event with an
    `aggregate_id` in the envelope): the notification service's copy reads it all the same."""

    EVENT_TYPE = "auth.user_registered"


def registered_by_auth(user_id: str, email: str) -> AuthUserRegistered:
    return AuthUserRegistered(aggregate_id=user_id, service_name="auth", data=UserRegisteredData(
        user_id=user_id, email=email, roles=["user"]))


# -- the handlers and the delivery task in one process --------------------------------------
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


# -- the service as a process ---------------------------------------------------------------
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
        "NOTIFICATION_SENDER": "services.notification.tests.procs.recording_sender:recording",
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


# -- a new consumer group that starts at the topics' ends ---------------------------------------
async def start_at_the_end(config: KafkaConfig, group: str, topics: Iterable[str]) -> None:
    """Create `topics` and commit `group`'s offsets at their ends, so a consumer of a new
    group starts with what is published from now on, not with every event that earlier
    tests of the session left on these shared topics."""
    names = list(topics)
    await KafkaAdmin(config).create_topics(names)
    await asyncio.to_thread(_commit_ends, config, group, names)


def _commit_ends(config: KafkaConfig, group: str, topics: list[str]) -> None:
    consumer = Consumer({"bootstrap.servers": config.bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False})
    try:
        ends = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            for partition in meta.partitions:
                tp = TopicPartition(topic, partition)
                ends.append(TopicPartition(topic, partition, _high(consumer, tp)))
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def _high(consumer: Consumer, tp: TopicPartition, timeout: float = 20.0) -> int:
    """The partition's end; a topic created a moment ago may have no leader yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=5)[1])
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
