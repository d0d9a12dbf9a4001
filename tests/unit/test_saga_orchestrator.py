"""The orchestrator on SQLite without Kafka: replies handed to it as the reply handler would
(`tests.saga_rig.answer`), deadlines made overdue by moving them into the past and swept by
hand, commands read back from the outbox table. The same over real Kafka:
tests/integration/test_saga.py."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from core.db import Database
from core.messaging import EventSerializer, OutboxWriter
from core.resilience import RetryPolicy
from core.saga import (
    COMPENSATED,
    COMPLETED,
    SagaOrchestrator,
    SagaRecord,
    StepEntry,
)
from tests.saga_rig import (
    Done,
    DoneData,
    Refused,
    RefusedData,
    TripData,
    answer,
    create_schema,
    events,
    metadata,
    tables,
    trip_saga,
)

RETRY = RetryPolicy(max_attempts=3, initial_delay=0.5, jitter=False)


class Ended:
    """An `on_end` that keeps what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[SagaRecord, TripData]] = []

    async def __call__(self, session: Any, record: SagaRecord, data: TripData) -> None:
        self.calls.append((record, data))


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
    assert record.status == COMPENSATED
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

