"""SQLite's writers queued in the process (`core.db.write_gate`), on a real SQLite file: a
transaction takes the gate at its first write and gives it back when it ends however it ends;
reads never wait; a writer kept waiting too long fails as SQLite's busy timeout fails it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.exc import OperationalError

from core.db.driver import DriverInsert
from core.db.engine import Database
from core.db.errors import unavailable
from core.db.write_gate import WriteGate

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True),
              Column("name", String(40), nullable=False))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


def gate_of(db: Database) -> WriteGate:
    assert db.write_gate is not None, "a SQLite database has a write gate by default"
    return db.write_gate


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.005)


async def count(db: Database) -> int:
    async with db.reads() as session:
        return int(await session.scalar(select(func.count()).select_from(items)) or 0)


async def holding(db: Database, release: asyncio.Event, name: str = "holder") -> None:
    """A transaction that writes, then keeps its write lock until `release` is set."""
    async with db.transaction() as session:
        await session.execute(insert(items), {"name": name})
        await release.wait()


async def test_a_second_writer_queues_in_the_gate_and_goes_on_when_the_first_commits(
        db: Database) -> None:
    gate, release = gate_of(db), asyncio.Event()
    holder = asyncio.create_task(holding(db, release))
    await until(lambda: gate.held, "the first writer took the gate at its insert")
    read_first = asyncio.Event()

    async def second() -> None:
        async with db.transaction() as session:
            await session.scalar(select(func.count()).select_from(items))  # a read: no wait
            read_first.set()
            await session.execute(insert(items), {"name": "second"})

    writer = asyncio.create_task(second())
    await until(read_first.is_set, "the second transaction's read ran while the gate was held")
    await until(lambda: gate.waits == 1, "the second writer queued in the gate")
    await asyncio.sleep(0.05)
    assert not writer.done(), "it waits while the first holds SQLite's write lock"
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, writer), 5)
    assert not gate.held
    assert await count(db) == 2


async def test_reads_and_transactions_that_only_read_never_wait(db: Database) -> None:
    gate, release = gate_of(db), asyncio.Event()
    holder = asyncio.create_task(holding(db, release))
    await until(lambda: gate.held, "the writer took the gate")
    async with asyncio.timeout(2):
        async with db.reads() as session:
            assert await session.scalar(select(func.count()).select_from(items)) == 0
        async with db.snapshot() as session:
            assert await session.scalar(select(func.count()).select_from(items)) == 0
        async with db.transaction() as session:  # a write transaction that wrote nothing
            assert await session.scalar(select(func.count()).select_from(items)) == 0
    assert gate.waits == 0
    release.set()
    await holder


@pytest.mark.parametrize("ending", ["error", "cancelled while holding", "cancelled in line"])
async def test_the_gate_is_given_back_however_the_transaction_ends(db: Database,
                                                                   ending: str) -> None:
    gate, release = gate_of(db), asyncio.Event()

    async def failing() -> None:
        async with db.transaction() as session:
            await session.execute(insert(items), {"name": "lost"})
            raise RuntimeError("the route failed after its write")

    if ending == "error":
        with pytest.raises(RuntimeError):
            await failing()
    elif ending == "cancelled while holding":
        task = asyncio.create_task(holding(db, release))
        await until(lambda: gate.held, "the writer took the gate")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        holder = asyncio.create_task(holding(db, release))
        await until(lambda: gate.held, "the writer took the gate")
        waiting = asyncio.create_task(holding(db, release, "in line"))
        await until(lambda: gate.waits == 1, "the second writer queued")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        await holder
    await until(lambda: not gate.held, "the gate was given back")
    async with asyncio.timeout(2):  # and the next writer gets it at once
        async with db.transaction() as session:
            await session.execute(insert(items), {"name": "next"})
    names = {"error": ["next"], "cancelled while holding": ["next"],
             "cancelled in line": ["holder", "next"]}[ending]
    async with db.reads() as session:
        assert list(await session.scalars(select(items.c.name).order_by(items.c.id))) == names


async def test_a_writer_kept_waiting_past_the_timeout_fails_as_sqlite_would(
        db: Database) -> None:
    gate, release = gate_of(db), asyncio.Event()
    gate.timeout = 0.2
    holder = asyncio.create_task(holding(db, release))
    await until(lambda: gate.held, "the writer took the gate")
    with pytest.raises(OperationalError) as raised:
        async with db.transaction() as session:
            await session.execute(insert(items), {"name": "late"})
    assert "database is locked" in str(raised.value)
    assert unavailable(raised.value), "a transient failure, as SQLite's own 'locked' is"
    release.set()
    await holder
    assert await count(db) == 1


async def test_a_row_written_on_the_driver_connection_takes_the_gate(db: Database) -> None:
    gate = gate_of(db)
    driver = DriverInsert(items, ("name",), db.engine.sync_engine.dialect)
    async with db.transaction() as session:
        assert not gate.held
        assert await driver.execute(session, {"name": "by the driver"}) == 1
        assert gate.held, "the driver's insert took the gate, as SQLite took its lock"
        await session.execute(insert(items), {"name": "then SQLAlchemy"})  # held already
    assert not gate.held
    assert await count(db) == 2


async def test_many_writers_at_once_all_commit(db: Database) -> None:
    async def writer(n: int) -> None:
        for i in range(25):
            async with db.transaction() as session:
                await session.execute(insert(items), {"name": f"{n}-{i}"})
                await asyncio.sleep(0)  # let another writer arrive while this one holds it

    await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(8))), 60)
    assert await count(db) == 200
    assert gate_of(db).waits > 0
    assert not gate_of(db).held


async def test_without_the_gate_writers_are_left_to_sqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}", write_gate=False)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        assert db.write_gate is None
        jobs: list[Awaitable[None]] = []
        for n in range(4):
            async def one(n: int = n) -> None:
                async with db.transaction() as session:
                    await session.execute(insert(items), {"name": str(n)})
            jobs.append(one())
        await asyncio.gather(*jobs)
        assert await count(db) == 4
    finally:
        await db.dispose()


async def test_postgres_has_no_gate() -> None:
    db = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # never connected
    try:
        assert db.write_gate is None
    finally:
        await db.dispose()
