"""A projection's stored positions on a SQLite file: the compare-and-set that keeps a record
from being applied twice, per projection, topic and partition, and what a rebuild's swap does
to them. The same under real races on PostgreSQL: tests/integration/test_projections.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import Database
from core.projections import PositionConflictError, positions_table
from core.projections.positions import advance, forget, hold, load, replace
from tests.helpers.projections import create_tables, metadata
from tests.unit.postgres_statements import PostgresStatements, SentError, on_postgresql

TABLE = positions_table(metadata)


@pytest.fixture(autouse=True)
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local clock 14 hours ahead of UTC, so a stamp taken in local time shows."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'read.db'}")
    await create_tables(database.engine)
    yield database
    await database.dispose()


async def _advance(db: Database, key: str, where: tuple[str, int], expected: int | None,
                   to: int) -> None:
    async with db.transaction() as session:
        await advance(session, TABLE, key, where, expected, to)


async def _load(db: Database, key: str) -> dict[tuple[str, int], int]:
    async with db.session() as session:
        return await load(session, TABLE, key)


async def test_a_position_moves_only_from_where_its_caller_read_it(db: Database) -> None:
    before = datetime.now(UTC)
    await _advance(db, "p", ("t", 0), None, 5)
    with pytest.raises(PositionConflictError, match=r"^p t/0: already stored$"):
        await _advance(db, "p", ("t", 0), None, 7)
    with pytest.raises(PositionConflictError, match=r"^p t/0: not at 4$"):
        await _advance(db, "p", ("t", 0), 4, 7)
    first = await _stamp(db)
    assert before <= first <= datetime.now(UTC)
    await _advance(db, "p", ("t", 0), 5, 9)
    assert await _load(db, "p") == {("t", 0): 9}
    assert first < await _stamp(db) <= datetime.now(UTC)


async def _stamp(db: Database) -> datetime:
    async with db.session() as session:
        stamps = (await session.execute(select(TABLE.c.updated_at))).scalars().all()
    return max(stamps).replace(tzinfo=UTC)


async def test_positions_are_kept_per_projection_topic_and_partition(db: Database) -> None:
    for key, where in [("p", ("t", 0)), ("p", ("t", 1)), ("p", ("u", 0)), ("q", ("t", 0))]:
        await _advance(db, key, where, None, 3)
    await _advance(db, "p", ("t", 0), 3, 4)  # the others at 3 do not move
    assert await _load(db, "p") == {("t", 0): 4, ("t", 1): 3, ("u", 0): 3}
    assert await _load(db, "q") == {("t", 0): 3}
    for key, where in [("q", ("t", 1)), ("q", ("u", 0))]:
        with pytest.raises(PositionConflictError):  # not stored for q: nothing to move
            await _advance(db, key, where, 3, 4)
    assert await _load(db, "nobody") == {}


async def test_a_swap_makes_the_rebuilds_positions_the_projections(db: Database) -> None:
    await _advance(db, "p", ("t", 0), None, 9)
    await _advance(db, "p", ("t", 1), None, 9)
    await _advance(db, "p#rebuild", ("t", 0), None, 12)
    await _advance(db, "q", ("t", 0), None, 2)
    before = datetime.now(UTC)
    async with db.transaction() as session:
        assert await hold(session, TABLE, "p") == {("t", 0): 9, ("t", 1): 9}
        await replace(session, TABLE, "p", "p#rebuild")
    assert await _load(db, "p") == {("t", 0): 12}  # p's own partition 1 went with it
    assert before <= await _stamp(db) <= datetime.now(UTC)  # the swapped in are stamped
    assert await _load(db, "p#rebuild") == {}
    async with db.transaction() as session:
        await forget(session, TABLE, "p")
    assert (await _load(db, "p"), await _load(db, "q")) == ({}, {("t", 0): 2})


async def test_on_postgresql_the_first_position_is_an_insert_that_skips_a_stored_one() -> None:
    session = PostgresStatements()
    with pytest.raises(SentError):
        await advance(session, TABLE, "p", ("t", 0), None, 5)  # type: ignore[arg-type]
    insert = on_postgresql(session.statements[0])
    assert insert.startswith("INSERT INTO projection_positions")
    assert insert.endswith("ON CONFLICT DO NOTHING")
