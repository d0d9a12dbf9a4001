"""The orchestrator on SQLite without Kafka: replies handed to it as the reply handler would
(`tests.saga_rig.answer`), deadlines made overdue by moving them into the past and swept by
hand, commands read back from the outbox table. The same over real Kafka:
tests/integration/test_saga.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import insert, select, update

from core import correlation
from core.db import Database
from core.messaging import EventSerializer, MessageContext, OutboxWriter
from core.messaging.outbox import outbox_table
from core.messaging.types import HEADER_IN_REPLY_TO, Record
from core.resilience import RetryPolicy
from core.saga import (
    COMPENSATED,
    COMPENSATING,
    COMPLETED,
    H_SAGA_ID,
    H_SAGA_STEP,
    NEEDS_ATTENTION,
    RUNNING,
    SagaDefinition,
    SagaNotFoundError,
    SagaOrchestrator,
    SagaRecord,
    SagaStateError,
    SagaStep,
    StepEntry,
    UnknownSagaError,
)
from core.saga.saga_orchestrator import CHANGE_ATTEMPTS
from tests.helpers import eventually
from tests.saga_rig import (
    Act,
    ActData,
    Done,
    DoneData,
    Refused,
    RefusedData,
    TripData,
    answer,
    create_schema,
    events,
    ledger,
    metadata,
    tables,
    trip_saga,
)

RETRY = RetryPolicy(max_attempts=3, initial_delay=20.0, max_delay=60.0, jitter=False)


class Ended:
    """An `on_end` that keeps what it was given, and writes a ledger row in the saga's
    transaction."""

    def __init__(self) -> None:
        self.calls: list[tuple[SagaRecord, Any]] = []

    async def __call__(self, session: Any, record: SagaRecord, data: Any) -> None:
        self.calls.append((record, data))
        await session.execute(insert(ledger).values(saga_id=record.id, resource=record.status,
                                                    state=record.status))


async def ends(db: Database) -> dict[str, str]:
    """What each saga's `on_end` wrote."""
    async with db.session() as session:
        rows = (await session.execute(select(ledger.c.saga_id, ledger.c.state))).all()
    return {saga_id: state for saga_id, state in rows}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sagas.db'}"
    await create_schema(url)
    database = Database(url)
    yield database
    await database.dispose()


@pytest.fixture
def ended() -> Ended:
    return Ended()


@pytest.fixture
def sagas(db: Database, ended: Ended) -> SagaOrchestrator:
    saga = dataclasses.replace(trip_saga("cmds", "replies"), on_end=ended)
    writer = OutboxWriter(metadata, EventSerializer(events()))
    return SagaOrchestrator(db, writer, tables, [saga], compensation_retry=RETRY)


async def begin(sagas: SagaOrchestrator, data: TripData | None = None) -> str:
    async with sagas.store.db.transaction() as session:
        return await sagas.begin(session, "trip", data or TripData(trip="t"))


async def overdue(sagas: SagaOrchestrator, saga_id: str) -> None:
    """The clock has passed the saga's deadline."""
    t = tables.instances
    async with sagas.store.db.transaction() as session:
        await session.execute(update(t).where(t.c.id == saga_id).values(
            deadline=datetime.now(UTC) - timedelta(seconds=1)))


def done(action: str = "x") -> Done:
    return Done(data=DoneData(action=action, ref=f"{action}-ref"))


def refused(reason: str) -> Refused:
    return Refused(data=RefusedData(action="x", reason=reason))


def cause(entry: StepEntry | None) -> tuple[str, str, str | None] | None:
    return None if entry is None else (entry.step_name, entry.event, entry.detail)


async def test_on_end_is_told_the_refusal_that_turned_the_saga_back(
    sagas: SagaOrchestrator, ended: Ended,
) -> None:
    """Payment refused; the seat's release refused once, then done: the cause is the
    payment's refusal, not the compensation's."""
    saga_id = await begin(sagas)
    await answer(sagas, saga_id, done("reserve"))
    await answer(sagas, saga_id, refused("card declined"))
    await answer(sagas, saga_id, refused("busy"))  # the seat's release, first attempt
    await overdue(sagas, saga_id)  # its backoff is over
    assert await sagas.sweep() == 1
    assert ended.calls == []
    await answer(sagas, saga_id, done("release"))
    ((record, data),) = ended.calls
    assert record.status == COMPENSATED and data.seat == "reserve-ref"
    assert cause(record.cause) == ("payment", "failed", "test.saga.refused: card declined")


async def test_on_end_is_told_the_step_that_timed_out(
    sagas: SagaOrchestrator, ended: Ended,
) -> None:
    saga_id = await begin(sagas)
    await overdue(sagas, saga_id)
    assert await sagas.sweep() == 1
    await answer(sagas, saga_id, done("release"))
    ((record, _),) = ended.calls
    assert record.status == COMPENSATED and record.last_error == "seat: no reply within 3s"
    assert cause(record.cause) == ("seat", "timed_out", "seat: no reply within 3s")


async def test_on_end_is_told_of_the_cancel(sagas: SagaOrchestrator, ended: Ended) -> None:
    saga_id = await begin(sagas)
    await answer(sagas, saga_id, done("reserve"))
    await sagas.cancel(saga_id, "the rider changed their mind")
    await answer(sagas, saga_id, done("refund"))
    await answer(sagas, saga_id, done("release"))
    ((record, _),) = ended.calls
    assert record.status == COMPENSATED
    assert cause(record.cause) == ("payment", "cancelled", "the rider changed their mind")


async def test_a_completed_saga_has_no_cause(sagas: SagaOrchestrator, ended: Ended) -> None:
    saga_id = await begin(sagas)
    for action in ("reserve", "charge", "confirm"):
        await answer(sagas, saga_id, done(action))
    ((record, _),) = ended.calls
    assert record.status == COMPLETED and record.cause is None


# -- what each transition writes: the instance, its history, its commands ---------------------

Row = tuple[int, str, str, str, str | None]


async def history(sagas: SagaOrchestrator, saga_id: str) -> list[Row]:
    return [(h.step, h.step_name, h.event, h.status, h.detail)
            for h in await sagas.history(saga_id)]


async def commands(db: Database) -> list[dict[str, Any]]:
    """The outbox rows, oldest first: where each went, its headers, its action."""
    t = outbox_table(metadata)
    async with db.session() as session:
        rows = (await session.execute(select(t).order_by(t.c.id))).all()
    return [{"topic": r.topic, "key": r.key, "event_id": r.event_id,
             "headers": dict(r.headers), "action": json.loads(r.payload)["data"]["action"]}
            for r in rows]


SENT = "test.saga.act to cmds"


async def test_a_saga_that_goes_through_writes_each_step_and_sends_each_command(
    sagas: SagaOrchestrator, db: Database,
) -> None:
    before = datetime.now(UTC)
    saga_id = await begin(sagas)
    after = datetime.now(UTC)
    record = await sagas.get(saga_id)
    assert (record.status, record.step, record.attempts, record.version) == (RUNNING, 0, 0, 1)
    assert record.deadline is not None and record.deadline.tzinfo is not None
    assert before + timedelta(seconds=3) <= record.deadline <= after + timedelta(seconds=3)
    assert record.created_at.tzinfo is not None and record.updated_at.tzinfo is not None
    assert record.correlation_id == saga_id  # no request behind it: the saga is its own
    (first,) = await commands(db)
    assert record.command_id == first["event_id"]
    for action in ("reserve", "charge", "confirm"):
        await answer(sagas, saga_id, done(action))
    record = await sagas.get(saga_id)
    assert (record.status, record.step, record.command_id, record.deadline) == (
        COMPLETED, 2, None, None)
    assert (record.version, record.data["seat"], record.last_error) == (4, "reserve-ref", None)
    assert record.attempts == 0 and record.updated_at > record.created_at
    assert await history(sagas, saga_id) == [
        (0, "seat", "started", RUNNING, None), (0, "seat", "sent", RUNNING, SENT),
        (0, "seat", "succeeded", RUNNING, "test.saga.done"),
        (1, "payment", "sent", RUNNING, SENT),
        (1, "payment", "succeeded", RUNNING, "test.saga.done"),
        (2, "confirm", "sent", RUNNING, SENT),
        (2, "confirm", "succeeded", RUNNING, "test.saga.done"),
        (2, "confirm", "completed", COMPLETED, None)]
    sent = await commands(db)
    assert [c["action"] for c in sent] == ["reserve", "charge", "confirm"]
    assert all((c["topic"], c["key"]) == ("cmds", saga_id) for c in sent)
    assert [(c["headers"][H_SAGA_ID], c["headers"][H_SAGA_STEP], c["headers"]["reply_to"],
             c["headers"]["correlation_id"]) for c in sent] == [
        (saga_id, step, "replies", saga_id) for step in ("seat", "payment", "confirm")]
    assert (sagas.counts["started"], sagas.counts[COMPLETED]) == (1, 1)
    assert await ends(db) == {saga_id: COMPLETED}  # on_end wrote in the last transaction
    await begin(sagas)
    assert sagas.counts["started"] == 2


async def test_a_refusal_compensates_in_reverse_and_a_refused_compensation_waits_its_backoff(
    sagas: SagaOrchestrator, db: Database,
) -> None:
    saga_id = await begin(sagas)
    await answer(sagas, saga_id, done("reserve"))
    await answer(sagas, saga_id, done("charge"))
    await answer(sagas, saga_id, refused("sold out"))  # confirm refused
    await answer(sagas, saga_id, done("refund"))
    before = datetime.now(UTC)
    await answer(sagas, saga_id, refused("busy"))  # the seat's release, attempt 1
    after = datetime.now(UTC)
    waiting = await sagas.get(saga_id)
    assert (waiting.status, waiting.step, waiting.command_id, waiting.attempts) == (
        COMPENSATING, 0, None, 1)
    assert waiting.deadline is not None
    assert before + timedelta(seconds=20) <= waiting.deadline <= after + timedelta(seconds=20)
    assert await sagas.sweep() == 0  # not due yet
    await overdue(sagas, saga_id)
    assert await sagas.sweep() == 1
    assert (await sagas.get(saga_id)).attempts == 2
    await answer(sagas, saga_id, done("release"))
    record = await sagas.get(saga_id)
    error = "compensation of seat failed (attempt 1): test.saga.refused: busy"
    assert (record.status, record.step, record.attempts, record.last_error) == (
        COMPENSATED, 0, 0, error)
    assert await history(sagas, saga_id) == [
        (0, "seat", "started", RUNNING, None), (0, "seat", "sent", RUNNING, SENT),
        (0, "seat", "succeeded", RUNNING, "test.saga.done"),
        (1, "payment", "sent", RUNNING, SENT),
        (1, "payment", "succeeded", RUNNING, "test.saga.done"),
        (2, "confirm", "sent", RUNNING, SENT),
        (2, "confirm", "failed", COMPENSATING, "test.saga.refused: sold out"),
        (1, "payment", "compensation_sent", COMPENSATING, f"attempt 1: {SENT}"),
        (1, "payment", "compensated", COMPENSATING, "test.saga.done"),
        (0, "seat", "compensation_sent", COMPENSATING, f"attempt 1: {SENT}"),
        (0, "seat", "compensation_failed", COMPENSATING, f"{error}; next attempt in 20.00s"),
        (0, "seat", "compensation_sent", COMPENSATING, f"attempt 2: {SENT}"),
        (0, "seat", "compensated", COMPENSATING, "test.saga.done"),
        (0, "seat", "compensated_all", COMPENSATED, None)]
    sent = await commands(db)
    assert [(c["action"], c["headers"][H_SAGA_STEP]) for c in sent][3:] == [
        ("refund", "payment:compensate"), ("release", "seat:compensate"),
        ("release", "seat:compensate")]
    assert sent[-1]["event_id"] != sent[-2]["event_id"]  # a new command: the inbox runs it
    assert (sagas.counts["compensation_failed"], sagas.counts[COMPENSATED]) == (1, 1)


async def test_a_refusal_at_the_first_step_ends_the_saga_with_nothing_to_undo(
    sagas: SagaOrchestrator, ended: Ended,
) -> None:
    saga_id, other = await begin(sagas), await begin(sagas)
    await answer(sagas, saga_id, refused("no seats"))
    await answer(sagas, other, refused("no seats"))
    record = await sagas.get(saga_id)
    assert (record.status, record.command_id, record.last_error) == (
        COMPENSATED, None, "seat: test.saga.refused: no seats")
    assert (record.step, record.attempts, record.deadline) == (0, 0, None)
    assert sagas.counts[COMPENSATED] == 2
    assert (await history(sagas, saga_id))[-2:] == [
        (0, "seat", "failed", COMPENSATING, "test.saga.refused: no seats"),
        (0, "seat", "compensated_all", COMPENSATED, None)]
    assert [r.status for r, _ in ended.calls] == [COMPENSATED] * 2


async def test_a_compensation_without_a_reply_is_an_attempt_and_the_last_one_needs_attention(
    sagas: SagaOrchestrator, ended: Ended, caplog: pytest.LogCaptureFixture,
) -> None:
    saga_id = await begin(sagas)
    await overdue(sagas, saga_id)
    await sagas.sweep()  # the seat timed out: its release is sent
    assert sagas.counts["timed_out"] == 1
    for attempt in (1, 2, 3):
        await overdue(sagas, saga_id)
        assert await sagas.sweep() == 1  # no reply in time: a failed attempt
        record = await sagas.get(saga_id)
        assert record.attempts == attempt and record.command_id is None
        if attempt < 3:
            await overdue(sagas, saga_id)
            assert await sagas.sweep() == 1  # its backoff over: sent again
    assert record.status == NEEDS_ATTENTION and record.deadline is None
    assert record.last_error == "compensation of seat failed (attempt 3): no reply in time"
    assert (await history(sagas, saga_id))[-1] == (
        0, "seat", "compensation_failed", NEEDS_ATTENTION, record.last_error)
    assert sagas.counts[NEEDS_ATTENTION] == 1
    assert [r.levelname for r in caplog.records if "needs attention" in r.getMessage()] == [
        "ERROR"]
    ((end, _),) = ended.calls
    assert end.status == NEEDS_ATTENTION
    await overdue(sagas, saga_id)
    assert await sagas.sweep() == 0  # left alone until an operator acts

    retried = await sagas.retry(saga_id)
    assert (retried.status, retried.attempts, retried.version) == (
        COMPENSATING, 1, record.version + 1)
    assert retried.last_error == record.last_error
    assert (await history(sagas, saga_id))[-2:] == [
        (0, "seat", "retried", COMPENSATING, None),
        (0, "seat", "compensation_sent", COMPENSATING, f"attempt 1: {SENT}")]
    await answer(sagas, saga_id, done("release"))
    assert (await sagas.get(saga_id)).status == COMPENSATED
    with pytest.raises(SagaStateError, match="needs attention"):
        await sagas.retry(saga_id)


async def test_cancelling_compensates_the_current_step_or_all_of_a_completed_saga(
    sagas: SagaOrchestrator, db: Database,
) -> None:
    running = await begin(sagas)
    before = datetime.now(UTC)
    cancelled = await sagas.cancel(running, "no longer wanted")
    deadline = (await sagas.get(running)).deadline  # the compensation's, 3 s
    assert deadline is not None
    assert before + timedelta(seconds=3) <= deadline <= datetime.now(UTC) + timedelta(seconds=3)
    assert (cancelled.status, cancelled.step, cancelled.version) == (COMPENSATING, 0, 2)
    assert cancelled.last_error == "cancelled: no longer wanted"
    assert cancelled.command_id == (await commands(db))[-1]["event_id"]
    assert (await history(sagas, running))[-2:] == [
        (0, "seat", "cancelled", COMPENSATING, "no longer wanted"),
        (0, "seat", "compensation_sent", COMPENSATING, f"attempt 1: {SENT}")]

    completed = await begin(sagas)
    for action in ("reserve", "charge", "confirm"):
        await answer(sagas, completed, done(action))
    undone = await sagas.cancel(completed, "refunded")
    assert (undone.status, undone.step) == (COMPENSATING, 1)  # confirm has nothing to undo
    assert (await commands(db))[-1]["action"] == "refund"
    await answer(sagas, completed, done("refund"))
    moved_down = await sagas.get(completed)
    assert (moved_down.step, moved_down.last_error) == (0, "cancelled: refunded")

    with pytest.raises(SagaStateError, match="running or completed"):
        await sagas.cancel(running, "again")
    with pytest.raises(SagaNotFoundError, match=r"^no saga no-such-saga$"):
        await sagas.cancel("no-such-saga", "x")
    with pytest.raises(SagaNotFoundError, match=r"^no saga no-such-saga$"):
        await sagas.get("no-such-saga")


async def test_an_operator_who_loses_a_race_reads_again_and_gives_up_on_a_saga_that_keeps_moving(
    sagas: SagaOrchestrator, monkeypatch: pytest.MonkeyPatch,
) -> None:
    saga_id = await begin(sagas)
    real, calls = sagas.store.move, []

    async def lose_twice(session: Any, record: SagaRecord, change: Any) -> bool:
        calls.append(record.version)
        return len(calls) > 2 and await real(session, record, change)

    monkeypatch.setattr(sagas.store, "move", lose_twice)
    assert (await sagas.cancel(saga_id, "x")).status == COMPENSATING
    assert len(calls) == 3 and sagas.counts["lost_race"] == 2

    async def always_lose(session: Any, record: SagaRecord, change: Any) -> bool:
        calls.append(record.version)
        return False

    calls.clear()
    monkeypatch.setattr(sagas.store, "move", always_lose)
    with pytest.raises(SagaStateError, match="kept moving"):
        await sagas.cancel(await begin(sagas), "x")
    assert len(calls) == CHANGE_ATTEMPTS


# -- replies that move nothing ---------------------------------------------------------------


def context(saga_id: str | None, in_reply_to: str | None, session: Any = None
            ) -> MessageContext:
    headers = [(k, v.encode()) for k, v in ((H_SAGA_ID, saga_id),
                                            (HEADER_IN_REPLY_TO, in_reply_to)) if v]
    return MessageContext(record=Record("replies", 0, 0, None, None, headers), attempt=1,
                          consumer_group="test", session=session)


async def test_a_reply_that_is_not_for_the_awaited_command_is_ignored(
    sagas: SagaOrchestrator, db: Database,
) -> None:
    saga_id = await begin(sagas)
    awaited = (await sagas.get(saga_id)).command_id
    for ctx in (context(None, awaited), context(saga_id, None), context("other", awaited),
                context(saga_id, "another-command")):
        await sagas.handle_reply(done("reserve"), ctx)
    await sagas.handle_reply(Act(data=ActData(action="what")), context(saga_id, awaited))
    assert sagas.counts["ignored"] == 5
    record = await sagas.get(saga_id)
    assert (record.status, record.step, record.version) == (RUNNING, 0, 1)


async def test_a_reply_names_its_command_by_header_or_else_by_its_causation_id(
    sagas: SagaOrchestrator,
) -> None:
    saga_id = await begin(sagas)
    awaited = (await sagas.get(saga_id)).command_id
    reply = done("reserve").model_copy(update={"causation_id": awaited})
    await sagas.handle_reply(reply, context(saga_id, None))
    assert (await sagas.get(saga_id)).step == 1


async def test_a_reply_moves_its_saga_in_the_handler_transaction(
    sagas: SagaOrchestrator, db: Database,
) -> None:
    """With the inbox's session, the move commits or rolls back with the inbox row."""
    saga_id = await begin(sagas)
    awaited = (await sagas.get(saga_id)).command_id
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await sagas.handle_reply(done("reserve"), context(saga_id, awaited, session))
            raise RuntimeError("the handler failed after the reply")
    assert (await sagas.get(saga_id)).step == 0
    async with db.transaction() as session:
        await sagas.handle_reply(done("reserve"), context(saga_id, awaited, session))
    assert (await sagas.get(saga_id)).step == 1


async def test_a_saga_of_a_type_this_orchestrator_does_not_run_is_left_be(
    sagas: SagaOrchestrator, db: Database,
) -> None:
    saga_id = await begin(sagas)
    other = dataclasses.replace(trip_saga("cmds", "replies"), name="other")
    stranger = SagaOrchestrator(db, sagas.outbox, tables, [other])
    await answer(stranger, saga_id, done("reserve"))
    await answer(stranger, saga_id, done("reserve"))
    assert stranger.counts["ignored"] == 2
    await overdue(sagas, saga_id)
    assert await stranger.sweep() == 0
    assert (await sagas.get(saga_id)).version == 1
    with pytest.raises(UnknownSagaError, match=r"^no saga definition named 'trip'$"):
        stranger.definition("trip")
    with pytest.raises(UnknownSagaError):
        await stranger.cancel(saga_id, "x")


# -- starting ----------------------------------------------------------------------------------


async def test_begin_takes_the_definition_or_its_name_an_id_and_the_request_correlation(
    sagas: SagaOrchestrator, db: Database,
) -> None:
    saga = sagas.definition("trip")
    async with db.transaction() as session:
        with correlation.bound("req-1"):
            given = await sagas.begin(session, saga, TripData(trip="t"), saga_id="my-id")
    assert given == "my-id"
    record = await sagas.get("my-id")
    assert record.correlation_id == "req-1" and record.data["trip"] == "t"
    assert (await commands(db))[-1]["headers"]["correlation_id"] == "req-1"
    with pytest.raises(TypeError, match="TripData"):
        async with db.transaction() as session:
            await sagas.begin(session, "trip", ActData(action="x"))
    with pytest.raises(ValueError, match=r"^two saga definitions share a name$"):
        SagaOrchestrator(db, sagas.outbox, tables, [saga, saga])


# -- deadlines ---------------------------------------------------------------------------------


async def test_a_sweep_acts_on_at_most_a_batch_and_the_sweeper_loops_until_none_is_left(
    sagas: SagaOrchestrator,
) -> None:
    sagas = SagaOrchestrator(sagas.store.db, sagas.outbox, tables, [sagas.definition("trip")],
                             sweep_batch=2)
    ids = [await begin(sagas) for _ in range(5)]
    for saga_id in ids:
        await overdue(sagas, saga_id)
    assert await sagas.sweep() == 2
    await sagas._sweep_all()
    assert {(await sagas.get(i)).status for i in ids} == {COMPENSATING}
    assert sagas.counts["timed_out"] == 5


async def test_a_saga_whose_deadline_fails_to_apply_does_not_hold_up_the_others(
    sagas: SagaOrchestrator, monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken, fine = await begin(sagas), await begin(sagas)
    for saga_id in (broken, fine):
        await overdue(sagas, saga_id)
    real = sagas.store.move

    async def move(session: Any, record: SagaRecord, change: Any) -> bool:
        if record.id == broken:
            raise RuntimeError("database hiccup")
        return await real(session, record, change)

    monkeypatch.setattr(sagas.store, "move", move)
    assert await sagas.sweep() == 1
    assert (await sagas.get(fine)).status == COMPENSATING
    assert (await sagas.get(broken)).status == RUNNING


async def test_the_sweeper_runs_while_started_and_wakes_on_demand(
    sagas: SagaOrchestrator,
) -> None:
    sagas.sweep_interval = 3600  # only its first pass and wake() make it sweep
    saga_id = await begin(sagas)
    await sagas.start()
    await sagas.start()  # once only
    try:
        await overdue(sagas, saga_id)
        sagas.wake()
        await eventually(lambda: sagas.counts["timed_out"] == 1, what="the saga swept")
    finally:
        await sagas.stop()
    again = await begin(sagas)
    await overdue(sagas, again)
    sagas.wake()
    await asyncio.sleep(0.2)  # nothing to await: a stopped sweeper does nothing
    assert (await sagas.get(again)).status == RUNNING


async def test_a_reply_naming_no_command_is_ignored_even_by_a_saga_awaiting_none(
    sagas: SagaOrchestrator,
) -> None:
    """A saga between two compensation attempts awaits no command: a reply that names none
    (no `in_reply_to`, no causation id) is not taken for the awaited one."""
    saga_id = await begin(sagas)
    await sagas.cancel(saga_id, "x")
    await answer(sagas, saga_id, refused("busy"))
    waiting = await sagas.get(saga_id)
    assert waiting.command_id is None and waiting.status == COMPENSATING
    await sagas.handle_reply(done("release"), context(saga_id, None))
    assert sagas.counts["ignored"] == 1
    assert (await sagas.get(saga_id)).version == waiting.version


async def test_a_saga_that_moved_since_the_sweep_read_it_is_left_to_its_new_deadline(
    sagas: SagaOrchestrator, monkeypatch: pytest.MonkeyPatch,
) -> None:
    saga_id = await begin(sagas)
    await overdue(sagas, saga_id)
    stale = await sagas.store.due(10)
    await answer(sagas, saga_id, done("reserve"))  # moved on to the payment step

    async def due(limit: int) -> list[tuple[str, int]]:
        return stale

    monkeypatch.setattr(sagas.store, "due", due)
    assert await sagas.sweep() == 0
    record = await sagas.get(saga_id)
    assert (record.status, record.step) == (RUNNING, 1)
    assert (sagas.counts["timed_out"], sagas.counts["lost_race"]) == (0, 0)


async def test_a_timeout_another_orchestrator_applied_first_is_not_counted_twice(
    sagas: SagaOrchestrator, monkeypatch: pytest.MonkeyPatch,
) -> None:
    saga_id = await begin(sagas)
    await overdue(sagas, saga_id)

    async def lose(session: Any, record: SagaRecord, change: Any) -> bool:
        return False

    monkeypatch.setattr(sagas.store, "move", lose)
    assert await sagas.sweep() == 0
    assert (sagas.counts["timed_out"], sagas.counts["lost_race"]) == (0, 1)


async def test_a_failing_sweep_is_logged_once_per_streak_and_the_sweeper_goes_on(
    sagas: SagaOrchestrator, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "core.saga")
    sagas.sweep_interval = 0.01
    real, failures = sagas.store.due, list[int]()

    async def due(limit: int) -> list[tuple[str, int]]:
        if len(failures) < 3:
            failures.append(limit)
            raise RuntimeError("database away")
        return await real(limit)

    monkeypatch.setattr(sagas.store, "due", due)
    saga_id = await begin(sagas)
    await overdue(sagas, saga_id)
    await sagas.start()
    try:
        assert "saga-sweeper" in {task.get_name() for task in asyncio.all_tasks()}
        await eventually(lambda: sagas.counts["timed_out"] == 1, timeout=10,
                         what="swept once the database is back")
    finally:
        await sagas.stop()
    assert [(r.levelname, r.getMessage()) for r in caplog.records
            if r.levelname == "ERROR"] == [("ERROR", "saga sweep failed")]
    assert "working again after 3 failures" in caplog.text


class When(BaseModel):
    at: datetime
    seat: str | None = None


async def test_data_of_any_json_type_is_kept_and_the_last_step_reply_reaches_on_end(
    db: Database, ended: Ended,
) -> None:
    one = SagaDefinition("one", When, "replies", [SagaStep(
        "seat", "cmds", lambda d: Act(data=ActData(action="reserve")), success=Done,
        on_success=lambda d, reply: d.model_copy(update={"seat": reply.data.ref}))],
        on_end=ended)
    sagas = SagaOrchestrator(db, OutboxWriter(metadata, EventSerializer(events())), tables,
                             [one])
    at = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
    async with db.transaction() as session:
        saga_id = await sagas.begin(session, one, When(at=at))
    await answer(sagas, saga_id, done("reserve"))
    ((record, data),) = ended.calls
    assert data == When(at=at, seat="reserve-ref")
    assert record.data == {"at": "2026-05-01T08:30:00Z", "seat": "reserve-ref"}
