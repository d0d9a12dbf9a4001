"""The inbox (`DatabaseIdempotencyStore`) on SQLite: the handler's writes and the inbox row
commit together or not at all, a duplicate is skipped, a database that cannot serve raises
`StoreUnavailableError` while the handler's own failures pass through, at most
`max_concurrency` handlers run at once. The same on PostgreSQL, under crashes and outages:
tests/integration/test_inbox.py and the idempotency contract suite."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, insert, orm, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from core.db.engine import Database
from core.messaging import inbox as inbox_module
from core.messaging.errors import StoreUnavailableError
from core.messaging.inbox import DatabaseIdempotencyStore
from tests.outbox_service import create_schema, effects, metadata

HANDLER = "billing.charge"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await create_schema(f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}")
    yield database
    await database.dispose()


def effect(event_id: str, seq: int = 0) -> Any:
    async def work(session: Any) -> None:
        await session.execute(insert(effects).values(event_id=event_id, account_id="a",
                                                     seq=seq))
    return work


async def effect_rows(db: Database) -> list[tuple[str, int]]:
    async with db.session() as session:
        return [tuple(r) for r in (await session.execute(
            select(effects.c.event_id, effects.c.seq).order_by(effects.c.n))).all()]


async def inbox_rows(db: Database) -> int:
    inbox = metadata.tables["inbox"]
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(inbox)) or 0)


async def test_the_effect_and_the_inbox_row_commit_together_and_a_duplicate_is_skipped(
    db: Database,
) -> None:
    store = DatabaseIdempotencyStore(db, metadata)
    assert not await store.seen("e-1", HANDLER)
    assert await store.run_once("e-1", HANDLER, effect("e-1", 1))
    assert await store.seen("e-1", HANDLER)
    assert not await store.seen("e-1", "other.handler")
    assert not await store.seen("e-9", HANDLER)
    assert not await store.run_once("e-1", HANDLER, effect("e-1", 2))
    assert await store.run_once("e-1", "other.handler", effect("e-1", 3))  # its own row
    assert await store.run_once("e-2", HANDLER, effect("e-2", 4))
    assert await effect_rows(db) == [("e-1", 1), ("e-1", 3), ("e-2", 4)]
    assert await inbox_rows(db) == 3
    again = DatabaseIdempotencyStore(db, metadata)  # a restart remembers
    assert not await again.run_once("e-2", HANDLER, effect("e-2", 5))


async def test_a_failing_handler_leaves_neither_its_writes_nor_the_inbox_row(
    db: Database,
) -> None:
    store = DatabaseIdempotencyStore(db, metadata)

    async def half_done(session: Any) -> None:
        await effect("e-1", 1)(session)
        raise ValueError("handler bug")

    with pytest.raises(ValueError, match="handler bug"):
        await store.run_once("e-1", HANDLER, half_done)
    assert await effect_rows(db) == [] and await inbox_rows(db) == 0
    assert not await store.seen("e-1", HANDLER)
    assert await store.run_once("e-1", HANDLER, effect("e-1", 2))  # the redelivery works
    assert await effect_rows(db) == [("e-1", 2)]


def locked() -> OperationalError:
    return OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))


async def test_the_database_failing_under_the_handler_is_a_store_outage(db: Database) -> None:
    store = DatabaseIdempotencyStore(db, metadata)

    async def write_blocked(session: Any) -> None:
        raise locked()

    with pytest.raises(StoreUnavailableError, match="inbox database"):
        await store.run_once("e-1", HANDLER, write_blocked)
    assert await inbox_rows(db) == 0


async def test_the_handlers_own_failures_pass_through_unchanged(db: Database) -> None:
    store = DatabaseIdempotencyStore(db, metadata)

    async def call_refused(session: Any) -> None:
        raise ConnectionRefusedError("the payment API is down")  # an OSError: the handler's

    async def bad_write(session: Any) -> None:
        await session.execute(insert(effects).values(event_id="e", account_id=None, seq=0))

    with pytest.raises(ConnectionRefusedError):
        await store.run_once("e-1", HANDLER, call_refused)
    with pytest.raises(IntegrityError):  # refused data: not an outage
        await store.run_once("e-1", HANDLER, bad_write)
    assert await inbox_rows(db) == 0


class DownDatabase(Database):
    """The service's database, unreachable: every transaction fails to connect."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        raise ConnectionRefusedError("connection refused")
        yield  # pragma: no cover


async def test_a_database_that_is_down_is_a_store_outage_and_the_handler_does_not_run(
    tmp_path: Path,
) -> None:
    db = DownDatabase(f"sqlite+aiosqlite:///{tmp_path / 'down.db'}")
    store = DatabaseIdempotencyStore(db, metadata)
    ran = []

    async def work(session: Any) -> None:
        ran.append(session)

    with pytest.raises(StoreUnavailableError, match="connection refused"):
        await store.run_once("e-1", HANDLER, work)
    assert ran == []
    await db.dispose()


class QuickDatabase:
    """A database whose every claim succeeds at once and holds no lock, so that only the
    store's own limit decides how many handlers run together (SQLite's single write lock
    would serialise the claims anyway). It keeps the statements it was given."""

    def __init__(self, dialect: str = "sqlite") -> None:
        self.dialect = dialect
        self.pool_capacity = 4
        self.statements: list[Any] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        session = SimpleNamespace(
            execute=self._execute,
            sync_session=SimpleNamespace(info={"inbox.executes": 2}, new=[1], dirty=[],
                                         deleted=[]))
        yield session

    async def _execute(self, statement: Any) -> Any:
        self.statements.append(statement)
        return SimpleNamespace(rowcount=1)


async def at_once(store: DatabaseIdempotencyStore, calls: int) -> int:
    """The most handlers `store` lets run together out of `calls` concurrent ones."""
    running, most, release = [0], [0], asyncio.Event()

    async def slow(session: Any) -> None:
        running[0] += 1
        most[0] = max(most[0], running[0])
        await release.wait()
        running[0] -= 1

    tasks = [asyncio.create_task(store.run_once(f"e-{i}", HANDLER, slow))
             for i in range(calls)]
    for _ in range(10):
        await asyncio.sleep(0)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 10) == [True] * calls
    return most[0]


async def test_at_most_max_concurrency_handlers_run_at_once() -> None:
    db: Any = QuickDatabase()
    assert await at_once(DatabaseIdempotencyStore(db, metadata), 3) == 1  # SQLite: one
    assert await at_once(DatabaseIdempotencyStore(db, metadata, max_concurrency=2), 4) == 2


async def test_the_limit_is_what_is_asked_and_half_the_pool_on_postgresql(
    db: Database,
) -> None:
    assert DatabaseIdempotencyStore(db, metadata, max_concurrency=3).max_concurrency == 3
    pg = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none", pool_size=7, max_overflow=4)
    assert DatabaseIdempotencyStore(pg, metadata).max_concurrency == 5  # 11 // 2
    tiny = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none", pool_size=1,
                    max_overflow=0)
    assert DatabaseIdempotencyStore(tiny, metadata).max_concurrency == 1
    await pg.dispose()
    await tiny.dispose()


async def test_on_postgresql_the_claim_is_an_insert_that_skips_a_duplicate() -> None:
    db: Any = QuickDatabase("postgresql")
    store = DatabaseIdempotencyStore(db, metadata)
    assert store.max_concurrency == 2
    assert await store.run_once("e-1", HANDLER, effect("e-1"))
    claim = str(db.statements[0].compile(dialect=postgresql.dialect()))
    assert claim.startswith("INSERT INTO inbox") and claim.endswith("ON CONFLICT DO NOTHING")


async def test_the_claim_is_stamped_in_utc(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # a host whose clock is not on UTC
    time.tzset()
    try:
        store = DatabaseIdempotencyStore(db, metadata)
        assert await store.run_once("e-1", HANDLER, effect("e-1"))
    finally:
        monkeypatch.undo()
        time.tzset()
    inbox = metadata.tables["inbox"]
    async with db.session() as session:
        stamped = await session.scalar(select(inbox.c.processed_at))
    assert abs((stamped.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()) < 600


class EffectRow:
    """An ORM object on the effects table: a handler may write by adding objects."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


orm.registry().map_imperatively(EffectRow, effects)


async def test_a_handler_that_writes_nothing_through_the_session_is_warned_about_once(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # As in a fresh process: the store itself must set up what it counts writes with.
    if sa_event.contains(Session, "do_orm_execute", inbox_module._count_execute):
        sa_event.remove(Session, "do_orm_execute", inbox_module._count_execute)
    store = DatabaseIdempotencyStore(db, metadata)

    async def adds_an_object(session: Any) -> None:
        session.add(EffectRow(event_id="e-4", account_id="a", seq=4))

    async def elsewhere(session: Any) -> None:
        return None

    with caplog.at_level(logging.WARNING, logger="core.messaging.inbox"):
        await store.run_once("e-1", "mailer", elsewhere)
        await store.run_once("e-2", "mailer", elsewhere)
        await store.run_once("e-3", HANDLER, effect("e-3"))
        await store.run_once("e-4", "orm.handler", adds_an_object)
    warned = [r.getMessage() for r in caplog.records if "wrote nothing" in r.getMessage()]
    assert warned == ["handler mailer wrote nothing through ctx.session: its effects "
                      "elsewhere are at-least-once, not exactly-once"]
