"""A participant's side of a saga (`participant`, `reply`) and a service's wiring
(`saga_replies`, `saga_hook`) on SQLite without Kafka: what lands in the outbox, what is
registered under which name, and the orchestrator a hook runs while the service does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select, update

from core.app import OUTBOX_WRITER
from core.db import Database
from core.messaging import (
    BaseEvent,
    EventSerializer,
    HandlerRegistry,
    MessageContext,
    OutboxWriter,
    PermanentHandlerError,
)
from core.messaging.outbox import outbox_table
from core.messaging.types import HEADER_IN_REPLY_TO, HEADER_REPLY_TO, Record
from core.runtime import Runtime
from core.saga import (
    COMPENSATING,
    H_SAGA_ID,
    SAGAS,
    Compensation,
    SagaDefinition,
    SagaOrchestrator,
    SagaStep,
    participant,
    saga_hook,
    saga_replies,
)
from tests.helpers import eventually
from tests.saga_rig import (
    Act,
    ActData,
    Done,
    DoneData,
    Refused,
    RefusedData,
    TripData,
    create_schema,
    events,
    metadata,
    tables,
    trip_saga,
)

SAGA = trip_saga("cmds", "replies")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'part.db'}"
    await create_schema(url)
    database = Database(url)
    yield database
    await database.dispose()


@pytest.fixture
def writer() -> OutboxWriter:
    return OutboxWriter(metadata, EventSerializer(events()))


def command_context(session: Any, runtime: Runtime, *, saga_id: str | None = "saga-1",
                    reply_to: str | None = "replies") -> MessageContext:
    headers = [(k, v.encode()) for k, v in ((H_SAGA_ID, saga_id), (HEADER_REPLY_TO, reply_to))
               if v]
    return MessageContext(record=Record("cmds", 0, 0, None, None, headers), attempt=1,
                          consumer_group="part", session=session, runtime=runtime)


async def replies(db: Database) -> list[dict[str, Any]]:
    t = outbox_table(metadata)
    async with db.session() as session:
        rows = (await session.execute(select(t).order_by(t.c.id))).all()
    return [{"topic": r.topic, "key": r.key, "headers": dict(r.headers),
             "event": json.loads(r.payload)} for r in rows]


async def run(handlers: HandlerRegistry, command: BaseEvent[Any], ctx: MessageContext) -> None:
    (handler,) = handlers.handlers_for(command)
    await handler.fn(command, ctx)


async def test_a_participant_answers_to_the_saga_through_the_outbox_in_its_transaction(
    db: Database, writer: OutboxWriter,
) -> None:
    handlers, runtime = HandlerRegistry(events()), Runtime()
    runtime.add(OUTBOX_WRITER, writer)

    async def reserve(command: Act, ctx: MessageContext) -> Done | Refused | None:
        if command.data.silent:
            return None
        if command.data.fail:
            return Refused(data=RefusedData(action="reserve", reason="no"),
                           causation_id="its-own")
        # a reply built as is, without `command.caused`: `reply` names the command it answers
        return Done(data=DoneData(action="reserve", ref=f"A1 for {ctx.record.header(H_SAGA_ID)}"))

    assert participant(handlers, Act)(reserve) is reserve
    (named,) = handlers.handlers_for(Act(data=ActData(action="x")))
    assert named.name == f"{__name__}.{reserve.__qualname__}"
    command = Act(data=ActData(action="reserve"))
    async with db.transaction() as session:
        await run(handlers, command, command_context(session, runtime))
        await run(handlers, Act(data=ActData(action="reserve", silent=True)),
                  command_context(session, runtime))
    refusal = Act(data=ActData(action="reserve", fail=True))
    async with db.transaction() as session:
        await run(handlers, refusal, command_context(session, runtime, saga_id="saga-2"))
    answered, refused = await replies(db)
    assert (answered["topic"], answered["key"]) == ("replies", "saga-1")
    assert answered["headers"][H_SAGA_ID] == "saga-1"
    assert answered["headers"][HEADER_IN_REPLY_TO] == str(command.event_id)
    assert answered["event"]["causation_id"] == str(command.event_id)
    assert answered["event"]["data"] == {"action": "reserve", "ref": "A1 for saga-1"}
    assert (refused["key"], refused["headers"][HEADER_IN_REPLY_TO]) == (
        "saga-2", str(refusal.event_id))
    assert refused["event"]["causation_id"] == "its-own"  # one the participant set is kept


async def test_a_participant_refuses_a_command_it_cannot_answer_for_good(
    db: Database, writer: OutboxWriter,
) -> None:
    handlers, runtime = HandlerRegistry(events()), Runtime()
    runtime.add(OUTBOX_WRITER, writer)

    @participant(handlers, Act, name="answers")
    async def answers(command: Act, ctx: MessageContext) -> Done:
        return command.caused(Done, DoneData(action="x", ref="y"))

    assert [h.name for h in handlers.handlers_for(Act(data=ActData(action="x")))] == ["answers"]
    command = Act(data=ActData(action="x"))
    with pytest.raises(PermanentHandlerError, match=(
            r"^a saga participant answers in its inbox transaction: register it with "
            r"once=True on a consumer with a database idempotency store$")):
        await run(handlers, command, command_context(None, runtime))
    async with db.transaction() as session:
        for ctx in (command_context(session, runtime, saga_id=None),
                    command_context(session, runtime, reply_to=None)):
            with pytest.raises(PermanentHandlerError, match="not a saga command"):
                await run(handlers, command, ctx)
    assert await replies(db) == []


class OtherRefusal(Refused):
    EVENT_TYPE = "test.saga.other_refusal"


def test_saga_replies_registers_each_reply_type_once_under_a_stable_name() -> None:
    other = SagaDefinition("other", TripData, "replies", [
        SagaStep("only", "cmds", lambda d: Act(data=ActData(action="x")), success=Done,
                 failure=OtherRefusal,
                 compensation=Compensation(lambda d: Act(data=ActData(action="y")),
                                           success=Done))])
    handlers = HandlerRegistry(events())
    saga_replies(handlers, SAGA, other)
    names = {kind: [h.name for h in handlers.handlers_for(kind(data=data))]
             for kind, data in ((Done, DoneData(action="x", ref="y")),
                                (Refused, RefusedData(action="x", reason="r")),
                                (OtherRefusal, RefusedData(action="x", reason="r")))}
    assert names == {Done: ["core.saga.reply:test.saga.done:v1"],
                     Refused: ["core.saga.reply:test.saga.refused:v1"],
                     OtherRefusal: ["core.saga.reply:test.saga.other_refusal:v1"]}
    assert len(handlers) == 3


async def test_a_reply_handler_hands_the_reply_to_the_running_orchestrator(
    db: Database, writer: OutboxWriter,
) -> None:
    sagas = SagaOrchestrator(db, writer, tables, [SAGA])
    runtime = Runtime()
    runtime.add(SAGAS, sagas)
    async with db.transaction() as session:
        saga_id = await sagas.begin(session, SAGA, TripData(trip="t"))
    handlers = HandlerRegistry(events())
    saga_replies(handlers, SAGA)
    reply = Done(data=DoneData(action="reserve", ref="A1"))
    ctx = MessageContext(
        record=Record("replies", 0, 0, None, None, [
            (H_SAGA_ID, saga_id.encode()),
            (HEADER_IN_REPLY_TO, ((await sagas.get(saga_id)).command_id or "").encode())]),
        attempt=1, consumer_group="orch", runtime=runtime)
    await run(handlers, reply, ctx)
    assert (await sagas.get(saga_id)).data["seat"] == "A1"


async def test_saga_hook_runs_an_orchestrator_with_its_sweeper_while_the_service_runs(
    db: Database, writer: OutboxWriter,
) -> None:
    runtime: Any = SimpleNamespace(database=db, outbox=writer)
    hook = saga_hook(metadata, SAGA, sweep_interval=3600.0)
    async with hook(runtime) as sagas:
        assert sagas.definition("trip") is SAGA and sagas.sweep_interval == 3600.0
        assert sagas.outbox is writer and sagas.store.db is db
        async with db.transaction() as session:
            saga_id = await sagas.begin(session, "trip", TripData(trip="t"))
        async with db.transaction() as session:
            await session.execute(update(tables.instances).values(
                deadline=datetime.now(UTC) - timedelta(seconds=1)))
        sagas.wake()
        await eventually(lambda: sagas.counts["timed_out"] == 1, what="swept")
        assert (await sagas.get(saga_id)).status == COMPENSATING
    assert sagas._sweeper is None  # stopped with the service
