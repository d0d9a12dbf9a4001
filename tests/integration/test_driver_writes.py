"""The outbox and inbox rows written on the session's own driver connection (`core.db.driver`),
on SQLite and the real PostgreSQL: the same row as SQLAlchemy writes, in the same transaction
(seen by it, by nobody else before the commit, gone with a rollback), errors as SQLAlchemy
raises them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from core.db.driver import DRIVER_WRITES, DriverInsert
from core.db.engine import Database
from core.db.errors import constraint_violation
from core.messaging.inbox import DatabaseIdempotencyStore
from core.messaging.outbox import OutboxWriter, outbox_table
from core.messaging.outbox.writer import COLUMNS
from core.messaging.serialization import EventSerializer
from tests.outbox_service import accounts, create_schema, deposit, metadata, registry

outbox = outbox_table(metadata)


class HandlerError(Exception):
    pass


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await create_schema(db_url)
    yield database
    await database.dispose()


def _writer() -> OutboxWriter:
    return OutboxWriter(metadata, EventSerializer(registry(), service_name="svc"))


async def _rows(db: Database) -> list[Any]:
    async with db.session() as session:
        return list((await session.execute(select(outbox).order_by(outbox.c.id))).all())


async def _open(session: Any, account: str) -> None:
    """A state write first, as a service makes it: the transaction is then open on both
    drivers, so the outbox row takes the driver path."""
    await session.execute(insert(accounts), {"id": account, "balance": 0})


async def test_the_driver_row_is_the_row_sqlalchemy_writes(db: Database) -> None:
    writer = _writer()
    dialect = db.engine.sync_engine.dialect
    driver = DriverInsert(outbox, COLUMNS, dialect)
    event = deposit("acct-1", 1)
    values: dict[str, Any] = {
        "event_id": str(event.event_id), "topic": "accounts", "key": "acct-1",
        "event_type": event.EVENT_TYPE, "payload": b'{"x": "\\u00e9 \x00 bytes"}',
        "headers": [["event_type", event.EVENT_TYPE], ["note", "é, \"quoted\""]],
        "created_at": datetime.now(UTC), "attempts": 0}
    async with db.transaction() as session:
        await _open(session, "a")
        assert await driver.execute(session, values) == 1
        assert session.sync_session.info[DRIVER_WRITES] == 1  # the driver path was taken
        await session.execute(insert(outbox), {**values, "event_id": "orm-path"})
        await writer.add(session, "accounts", event.model_copy(update={"event_id": uuid.uuid4()}))
    by_driver, by_orm, by_writer = await _rows(db)
    assert by_orm.event_id == "orm-path"
    assert by_driver.event_id == values["event_id"]
    columns = [c for c in COLUMNS if c != "event_id"] + ["published_at", "last_error"]
    assert {c: getattr(by_driver, c) for c in columns} == {c: getattr(by_orm, c)
                                                           for c in columns}
    assert by_driver.headers == values["headers"] and by_driver.payload == values["payload"]
    assert by_writer.topic == "accounts" and by_writer.key == "acct-1"
    assert ["event_type", event.EVENT_TYPE] in by_writer.headers


async def test_a_rollback_leaves_no_row(db: Database) -> None:
    writer = _writer()
    with pytest.raises(HandlerError):
        async with db.transaction() as session:
            await _open(session, "a")
            await writer.add(session, "accounts", deposit("acct-1", 1))
            assert session.sync_session.info[DRIVER_WRITES] == 1
            raise HandlerError
    assert await _rows(db) == []
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(accounts)) == 0


async def test_the_transaction_sees_its_row_and_nobody_else_before_the_commit(
        db: Database) -> None:
    writer = _writer()
    async with db.transaction() as session:
        await _open(session, "a")
        await writer.add(session, "accounts", deposit("acct-1", 1))
        assert await session.scalar(select(func.count()).select_from(outbox)) == 1
        assert await _rows(db) == []  # another connection: not committed yet
    assert len(await _rows(db)) == 1


async def test_a_first_statement_commits_and_rolls_back_with_its_transaction(
        db: Database) -> None:
    """On PostgreSQL the first statement goes through SQLAlchemy (it sends the BEGIN); on
    SQLite through the driver (sqlite3 begins by itself). Either way, one transaction."""
    writer = _writer()
    with pytest.raises(HandlerError):
        async with db.transaction() as session:
            await writer.add(session, "accounts", deposit("acct-1", 1))
            await _open(session, "a")
            raise HandlerError
    assert await _rows(db) == []
    async with db.transaction() as session:
        await writer.add(session, "accounts", deposit("acct-1", 2))
        via_driver = session.sync_session.info.get(DRIVER_WRITES, 0)
        await _open(session, "a")
    assert via_driver == (1 if db.dialect == "sqlite" else 0)
    assert len(await _rows(db)) == 1


async def test_a_driver_error_is_raised_as_sqlalchemy_raises_it(db: Database) -> None:
    writer = _writer()
    event = deposit("acct-1", 1)
    async with db.transaction() as session:
        await writer.add(session, "accounts", event)
    with pytest.raises(IntegrityError) as raised:
        async with db.transaction() as session:
            await _open(session, "a")
            await writer.add(session, "accounts", event)  # the same event_id again
    assert constraint_violation(raised.value).kind == "unique"
    assert len(await _rows(db)) == 1
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(accounts)) == 0


async def test_the_inbox_claims_once_and_a_failed_handler_leaves_no_claim(
        db: Database) -> None:
    store = DatabaseIdempotencyStore(db, metadata)
    runs: list[str] = []

    async def work(session: Any) -> None:
        runs.append("ran")
        # SQLite: the claim went out on the driver; PostgreSQL: through SQLAlchemy (BEGIN)
        assert session.sync_session.info.get(DRIVER_WRITES, 0) == (db.dialect == "sqlite")
        await _open(session, f"a{len(runs)}")

    async def failing(session: Any) -> None:
        await _open(session, "doomed")
        raise HandlerError

    with pytest.raises(HandlerError):
        await store.run_once("e-1", "h", failing)
    assert not await store.seen("e-1", "h")
    assert await store.run_once("e-1", "h", work) is True
    assert await store.run_once("e-1", "h", work) is False
    assert await store.run_once("e-1", "other", work) is True
    assert runs == ["ran", "ran"]
    assert await store.seen("e-1", "h")


async def test_a_transaction_ends_its_connection_whatever_happens(db: Database) -> None:
    """`Database.transaction()` commits, rolls back on an error and on cancellation, and
    always gives its connection back to the pool."""
    pool: Any = db.engine.sync_engine.pool
    started = asyncio.Event()

    async def cancelled() -> None:
        async with db.transaction() as session:
            await _open(session, "cancelled")
            started.set()
            await asyncio.sleep(30)

    task = asyncio.ensure_future(cancelled())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(HandlerError):
        async with db.transaction() as session:
            await _open(session, "failed")
            raise HandlerError
    async with db.transaction() as session:
        await _open(session, "committed")
    async with db.session() as session:
        ids = (await session.scalars(select(accounts.c.id))).all()
    assert ids == ["committed"]
    assert pool.checkedout() == 0
