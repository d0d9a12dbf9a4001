"""A test saga over real Kafka, and the participants that answer it, in one small schema.

The "trip" saga: `seat` (reserve a seat; compensation: release it) → `payment` (charge;
compensation: refund) → `confirm` (no compensation). The participants keep a ledger (one row
per saga and resource: `held` or `released`), so a test can check that nothing is left held by
a saga that did not complete. What goes wrong is written into each saga's data and travels on
its commands, so every saga of a load test fails (or not) in its own planned way:

- `fail`: the step whose participant refuses (a failure reply, no effect);
- `silent`: the step whose participant acts but never answers (the step times out);
- `comp_failures` / `comp_silent`: how many times each compensation is refused / ignored
  before it is done.

`Node` is one orchestrating service instance (or a participant one, or both) on a database:
bus, inbox, outbox relay and orchestrator, as `create_service` wires them.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core.app import OUTBOX_WRITER
from core.config import KafkaConfig
from core.db import Database
from core.messaging import (
    DatabaseIdempotencyStore,
    EventRegistry,
    HandlerRegistry,
    IntegrationEvent,
    KafkaEventBus,
    MessageContext,
    OutboxRelay,
    OutboxWriter,
    messaging_tables,
)
from core.messaging.consumer import EventConsumer
from core.messaging.outbox import relay_producer
from core.messaging.types import HEADER_EVENT_ID, HEADER_IN_REPLY_TO, Record
from core.resilience import RetryPolicy
from core.runtime import Runtime
from core.saga import (
    H_SAGA_ID,
    SAGAS,
    Compensation,
    SagaDefinition,
    SagaOrchestrator,
    SagaStep,
    participant,
    saga_replies,
    saga_tables,
)
from tests.helpers import unique

metadata = MetaData()
messaging_tables(metadata)
tables = saga_tables(metadata)
ledger = Table(
    "ledger", metadata,
    Column("saga_id", String(36), primary_key=True),
    Column("resource", String(20), primary_key=True),
    Column("state", String(10), nullable=False),
)
answered = Table(  # how many times each saga's compensation was refused or ignored so far
    "answered", metadata,
    Column("saga_id", String(36), primary_key=True),
    Column("action", String(20), primary_key=True),
    Column("n", Integer, nullable=False),
)


class ActData(BaseModel):
    action: str
    fail: bool = False
    silent: bool = False
    comp_failures: int = 0
    comp_silent: int = 0


class Act(IntegrationEvent[ActData]):
    EVENT_TYPE = "test.saga.act"


class DoneData(BaseModel):
    action: str
    ref: str


class Done(IntegrationEvent[DoneData]):
    EVENT_TYPE = "test.saga.done"


class RefusedData(BaseModel):
    action: str
    reason: str


class Refused(IntegrationEvent[RefusedData]):
    EVENT_TYPE = "test.saga.refused"


class TripData(BaseModel):
    trip: str
    fail: str | None = None
    silent: str | None = None
    comp_failures: int = 0
    comp_silent: int = 0
    seat: str | None = None
    """Set from the `seat` step's reply."""


STEPS = ("seat", "payment", "confirm")
DO = {"seat": "reserve", "payment": "charge", "confirm": "confirm"}
UNDO = {"seat": "release", "payment": "refund"}
RESOURCE = {"reserve": "seat", "charge": "payment", "release": "seat", "refund": "payment"}


def events() -> EventRegistry:
    registry = EventRegistry()
    for cls in (Act, Done, Refused):
        registry.register(cls)
    return registry


def _act(step: str) -> Any:
    def build(data: TripData) -> Act:
        return Act(data=ActData(action=DO[step], fail=data.fail == step,
                                silent=data.silent == step))
    return build


def _undo(step: str) -> Any:
    def build(data: TripData) -> Act:
        return Act(data=ActData(action=UNDO[step], comp_failures=data.comp_failures,
                                comp_silent=data.comp_silent))
    return build


def _keep_seat(data: TripData, reply: Done) -> TripData:
    return data.model_copy(update={"seat": reply.data.ref})


def trip_saga(topic: str, reply_topic: str, *, timeout: float = 3.0,
              comp_timeout: float = 3.0) -> SagaDefinition[TripData]:
    def step(name: str) -> SagaStep[TripData]:
        undo = (Compensation(_undo(name), success=Done, failure=Refused, timeout=comp_timeout)
                if name in UNDO else None)
        return SagaStep(name, topic, _act(name), success=Done, failure=Refused,
                        timeout=timeout, compensation=undo,
                        on_success=_keep_seat if name == "seat" else None)

    return SagaDefinition("trip", TripData, reply_topic, [step(name) for name in STEPS])


def planned(rng: random.Random, n: int) -> list[TripData]:
    """Half go through; the rest are refused or go silent at a random step, some with
    compensations refused or ignored once or twice before they are done."""
    trips = []
    for i in range(n):
        data = TripData(trip=str(i))
        roll = rng.random()
        if roll < 0.25:
            data.fail = rng.choice(["seat", "payment", "confirm"])
        elif roll < 0.5:
            data.silent = rng.choice(["seat", "payment", "confirm"])
        if data.fail or data.silent:
            data.comp_failures = rng.choice([0, 0, 1, 2])
            data.comp_silent = rng.choice([0, 0, 0, 1])
        trips.append(data)
    return trips


# -- the participants -----------------------------------------------------------------------

participants = HandlerRegistry(events())


def _upsert(session: Any) -> Any:
    dialect = session.bind.dialect.name
    return pg_insert if dialect == "postgresql" else sqlite_insert


async def _count(session: Any, saga_id: str, action: str) -> int:
    """How many times this action came before now (this delivery counted)."""
    insert = _upsert(session)
    await session.execute(insert(answered).values(saga_id=saga_id, action=action, n=0)
                          .on_conflict_do_nothing())
    await session.execute(update(answered).where(
        answered.c.saga_id == saga_id, answered.c.action == action)
        .values(n=answered.c.n + 1))
    return int(await session.scalar(select(answered.c.n).where(
        answered.c.saga_id == saga_id, answered.c.action == action)) or 0)


@participant(participants, Act, name="tests.saga_rig.act")
async def act(command: Act, ctx: MessageContext) -> Done | Refused | None:
    session, data = ctx.session, command.data
    saga_id = ctx.record.header(H_SAGA_ID) or ""
    insert = _upsert(session)
    if data.action in ("release", "refund"):
        n = await _count(session, saga_id, data.action)
        if n <= data.comp_failures:
            return command.caused(Refused, RefusedData(action=data.action,
                                                       reason=f"refusal {n}"))
        if n <= data.comp_failures + data.comp_silent:
            return None
        # A tombstone if nothing was held: a late command then holds nothing.
        await session.execute(insert(ledger).values(
            saga_id=saga_id, resource=RESOURCE[data.action], state="released")
            .on_conflict_do_update(index_elements=["saga_id", "resource"],
                                   set_={"state": "released"}))
        return command.caused(Done, DoneData(action=data.action, ref=saga_id))
    if data.fail:
        return command.caused(Refused, RefusedData(action=data.action, reason="planned"))
    state = "done" if data.action == "confirm" else "held"
    await session.execute(insert(ledger).values(
        saga_id=saga_id, resource=RESOURCE.get(data.action, data.action), state=state)
        .on_conflict_do_nothing())
    if data.silent:
        return None
    return command.caused(Done, DoneData(action=data.action, ref=f"{data.action}-{saga_id}"))


# -- a service instance ------------------------------------------------------------------------

FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.3)


@dataclasses.dataclass
class Node:
    """One process's share of the system, as `create_service` would wire it."""

    url: str
    config: KafkaConfig
    saga: SagaDefinition[TripData]
    orchestrate: bool = True
    participate: bool = True
    retry: RetryPolicy = FAST_RETRY
    sweep_interval: float = 0.2
    owner: str = dataclasses.field(default_factory=lambda: unique("node"))

    async def start(self) -> Node:
        self.db = Database(self.url)
        self.runtime = Runtime()
        registry = events()
        self.bus = KafkaEventBus(
            dataclasses.replace(self.config, client_id=unique("client")), registry,
            idempotency=DatabaseIdempotencyStore(self.db, metadata), runtime=self.runtime)
        self.writer = OutboxWriter(metadata, self.bus.serializer)
        self.publisher = relay_producer(self.config)
        self.relay = OutboxRelay(self.db, self.publisher, metadata, owner=self.owner,
                                 poll_interval=0.1, lease_ttl=2.0)
        self.writer.on_commit(self.relay.notify)
        self.runtime.add(OUTBOX_WRITER, self.writer)
        consumers: list[EventConsumer] = []
        self.sagas: SagaOrchestrator | None = None
        if self.orchestrate:
            self.sagas = SagaOrchestrator(self.db, self.writer, tables, [self.saga],
                                          compensation_retry=self.retry,
                                          sweep_interval=self.sweep_interval)
            self.runtime.add(SAGAS, self.sagas)
            replies = HandlerRegistry(registry)
            saga_replies(replies, self.saga)
            consumers.append(self.bus.subscribe(self.saga.reply_topic, replies,
                                                group_id=f"{self.config.consumer_group}-orch"))
        if self.participate:
            consumers.append(self.bus.subscribe(self.saga.steps[0].topic, participants,
                                                group_id=f"{self.config.consumer_group}-part"))
        await self.bus.start()
        await self.publisher.start()
        await self.relay.start()
        if self.sagas is not None:
            await self.sagas.start()
        for consumer in consumers:
            await consumer.wait_assigned()
        return self

    async def stop(self) -> None:
        if self.sagas is not None:
            await self.sagas.stop()
        await self.bus.stop()
        await self.relay.stop()
        await self.publisher.stop(2.0)
        await self.db.dispose()


async def answer(orchestrator: SagaOrchestrator, saga_id: str, reply: Done | Refused) -> None:
    """Hand `orchestrator` `reply` to the command its saga awaits now, as a participant's
    reply would arrive (no Kafka: the handler's context, without an inbox session)."""
    record = await orchestrator.get(saga_id)
    await orchestrator.handle_reply(reply, MessageContext(
        record=Record("replies", 0, 0, None, None, [
            (H_SAGA_ID, saga_id.encode()),
            (HEADER_IN_REPLY_TO, (record.command_id or "").encode()),
            (HEADER_EVENT_ID, str(reply.event_id).encode())]),
        attempt=1, consumer_group="test"))


async def create_schema(url: str) -> None:
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
    finally:
        await db.dispose()


async def statuses(db: Database) -> Counter[str]:
    t = tables.instances
    async with db.session() as session:
        rows = (await session.execute(select(t.c.status, func.count()).group_by(t.c.status)))
        return Counter({status: int(n) for status, n in rows.all()})


async def held(db: Database) -> dict[str, set[str]]:
    """Per saga, the resources its participants hold now (what a compensation releases;
    `confirm` has none, so its row says `done`, not held)."""
    async with db.session() as session:
        rows = (await session.execute(
            select(ledger.c.saga_id, ledger.c.resource).where(ledger.c.state == "held"))).all()
    found: dict[str, set[str]] = {}
    for saga_id, resource in rows:
        found.setdefault(saga_id, set()).add(resource)
    return found
