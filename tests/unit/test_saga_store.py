"""The saga tables as the operators' tools and the sweeper read them, on SQLite: which sagas
are due and in what order, listing and counting, an operator's rearm, and the clock each
database's deadlines are stamped with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import insert

from core.db import Database
from core.saga import (
    COMPENSATED,
    COMPENSATING,
    COMPLETED,
    NEEDS_ATTENTION,
    RUNNING,
    SagaStore,
)
from core.saga.store import Change, _aware
from tests.saga_rig import create_schema, tables


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SagaStore]:
    """SQLite returns rows in insertion order even without ORDER BY; here unordered SELECTs
    come back reversed, so a query that forgot its order shows."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    await create_schema(url)
    db = Database(url)
    sa_event.listen(db.engine.sync_engine, "connect", _unordered_selects_reversed)
    yield SagaStore(db, tables)
    await db.dispose()


def _unordered_selects_reversed(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA reverse_unordered_selects = ON")
    cursor.close()


async def add(store: SagaStore, saga_id: str, status: str, *, deadline: float | None = None,
              created: float = 0, saga_type: str = "trip", step: int = 0,
              now: datetime | None = None) -> None:
    """A saga row; `deadline` and `created` in seconds from `now`."""
    now = now or datetime.now(UTC)
    async with store.db.transaction() as session:
        await session.execute(insert(tables.instances).values(
            id=saga_id, saga_type=saga_type, data={"trip": saga_id}, status=status, step=step,
            command_id="c-1" if status == RUNNING else None, attempts=3, version=7,
            deadline=None if deadline is None else now + timedelta(seconds=deadline),
            created_at=now + timedelta(seconds=created), updated_at=now))


async def test_due_lists_the_active_sagas_past_their_deadline_the_most_overdue_first(
    store: SagaStore,
) -> None:
    await add(store, "late", RUNNING, deadline=-5)
    await add(store, "later", COMPENSATING, deadline=-50)
    await add(store, "latest", RUNNING, deadline=-500)
    await add(store, "not-yet", RUNNING, deadline=60)
    await add(store, "ended", COMPENSATED, deadline=-60)
    await add(store, "stuck", NEEDS_ATTENTION, deadline=-60)
    await add(store, "no-deadline", COMPLETED)
    assert await store.due(10) == [("latest", 7), ("later", 7), ("late", 7)]
    assert await store.due(2) == [("latest", 7), ("later", 7)]


async def test_find_lists_the_newest_first_by_status_and_type_a_page_at_a_time(
    store: SagaStore,
) -> None:
    for i, status in enumerate([RUNNING, COMPLETED, RUNNING, NEEDS_ATTENTION]):
        await add(store, f"s{i}", status, created=i)
    await add(store, "other", RUNNING, created=9, saga_type="other")
    assert [r.id for r in await store.find()] == ["other", "s3", "s2", "s1", "s0"]
    assert [r.id for r in await store.find(status=RUNNING)] == ["other", "s2", "s0"]
    assert [r.id for r in await store.find(saga_type="trip", status=RUNNING)] == ["s2", "s0"]
    assert [r.id for r in await store.find(limit=2, offset=1)] == ["s3", "s2"]
    (record,) = await store.find(status=NEEDS_ATTENTION)
    assert (record.saga_type, record.data, record.attempts, record.version) == (
        "trip", {"trip": "s3"}, 3, 7)
    assert record.created_at.tzinfo == UTC and record.updated_at.tzinfo == UTC
    assert await store.count() == {RUNNING: 3, COMPLETED: 1, NEEDS_ATTENTION: 1}


async def test_find_pages_by_fifty_and_orders_sagas_begun_at_once_by_id(
    store: SagaStore,
) -> None:
    at = datetime.now(UTC)
    for i in range(51):
        await add(store, f"s{i:02}", RUNNING, now=at)
    found = [r.id for r in await store.find()]
    assert found == [f"s{i:02}" for i in range(50, 0, -1)]


async def test_rearm_puts_a_stuck_saga_back_to_compensating_due_now(store: SagaStore) -> None:
    await add(store, "stuck", NEEDS_ATTENTION, step=1)
    await add(store, "also-stuck", NEEDS_ATTENTION)
    await add(store, "fine", COMPENSATED)
    assert await store.rearm("stuck")
    record = await store.load("stuck")
    assert record is not None
    assert record.updated_at > record.created_at
    other = await store.load("also-stuck")
    assert other is not None and other.status == NEEDS_ATTENTION  # only the one named
    assert (record.status, record.attempts, record.command_id, record.version) == (
        COMPENSATING, 0, None, 8)
    assert await store.due(10) == [("stuck", 8)]
    (entry,) = await store.history("stuck")
    assert (entry.step, entry.step_name, entry.event, entry.status, entry.detail) == (
        1, "", "retried", COMPENSATING, "by an operator, at the next sweep")
    assert entry.at.tzinfo is not None
    assert not await store.rearm("stuck")  # no longer stuck
    assert not await store.rearm("fine")
    assert [e.event for e in await store.history("stuck")] == ["retried"]
    assert await store.load("no-such-saga") is None


async def test_history_is_in_the_order_written_and_the_cause_is_the_first_turn_back(
    store: SagaStore,
) -> None:
    await add(store, "s", COMPENSATING)
    async with store.db.transaction() as session:
        await store.log(session, "s", [])
        await store.log(session, "s", [(0, "seat", "started", RUNNING, None),
                                       (1, "pay", "timed_out", COMPENSATING, "late")])
        assert await store.cause(session, "s") is not None
        await store.log(session, "s", [(1, "pay", "cancelled", COMPENSATING, "later")])
    assert [(e.step, e.event) for e in await store.history("s")] == [
        (0, "started"), (1, "timed_out"), (1, "cancelled")]
    async with store.db.session() as session:
        cause = await store.cause(session, "s")
        assert cause is not None and (cause.step_name, cause.event, cause.detail) == (
            "pay", "timed_out", "late")
        assert await store.cause(session, "other") is None


def test_deadlines_are_stamped_by_postgresql_own_clock_and_by_the_process_on_sqlite() -> None:
    postgres: Any = SimpleNamespace(dialect="postgresql")
    assert str(SagaStore(postgres, tables).now()) == "now()"
    sqlite: Any = SimpleNamespace(dialect="sqlite")
    before = datetime.now(UTC)
    now = SagaStore(sqlite, tables).now()
    assert before <= now <= datetime.now(UTC)


def test_times_read_back_are_aware_and_keep_their_instant() -> None:
    naive = datetime(2026, 1, 1, 12, 0)
    assert _aware(naive) == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    berlin = datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert _aware(berlin) is berlin
    assert _aware(None) is None


async def test_a_new_saga_is_written_as_its_first_change_says(store: SagaStore) -> None:
    change = Change(COMPENSATING, 1, {"trip": "t"}, "c-9", None, 2, "an error")
    async with store.db.transaction() as session:
        await store.insert(session, "s", "trip", {"trip": "t"}, change, "corr")
    record = await store.load("s")
    assert record is not None
    assert (record.status, record.step, record.data, record.command_id, record.deadline) == (
        COMPENSATING, 1, {"trip": "t"}, "c-9", None)
    assert (record.attempts, record.last_error, record.correlation_id, record.version) == (
        2, "an error", "corr", 1)


async def test_a_move_from_a_version_the_saga_has_left_writes_nothing(store: SagaStore) -> None:
    await add(store, "s", RUNNING)
    read = await store.load("s")
    assert read is not None
    first = Change(COMPENSATING, 0, {}, "c-2", 5.0, 1, "first")
    second = Change(COMPLETED, 0, {}, None, None, 0, None)
    async with store.db.transaction() as session:
        assert await store.move(session, read, first)
        assert not await store.move(session, read, second)
    record = await store.load("s")
    assert record is not None
    assert (record.status, record.last_error, record.version) == (COMPENSATING, "first", 8)
    assert record.updated_at > record.created_at
