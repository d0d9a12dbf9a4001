"""A rebuild's swap and its guard on a SQLite file: the fresh rows and positions replace the
live ones in one transaction unless the live projection is further on, and while it replays
a statement naming a live table is refused. The replay itself reads Kafka (`rebuild`):
tests/integration/test_projections.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.dialects import postgresql

from core.db import Database
from core.db.models import service_metadata
from core.projections import Projection, RebuildFailedError, positions_table
from core.projections.rebuild import _BehindError, _move_sequence, _refusing, _swap, fresh_tables
from tests.helpers.projections import create_tables, driver_trips, metadata, ride_history
from tests.unit.postgres_statements import PostgresStatements, SentError

POSITIONS = positions_table(metadata)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'read.db'}")
    await create_tables(database.engine)
    yield database
    await database.dispose()


async def _positions(db: Database) -> dict[tuple[str, int], int]:
    async with db.session() as session:
        result = await session.execute(select(POSITIONS.c.projection, POSITIONS.c.partition,
                                              POSITIONS.c.next_offset))
        return {(name, p): o for name, p, o in result}


async def _rows(db: Database, table: Table) -> list[tuple[Any, ...]]:
    async with db.session() as session:
        result = await session.execute(select(table).order_by(*table.primary_key.columns))
        return [tuple(r) for r in result]


async def test_a_swap_replaces_the_live_rows_and_positions_unless_the_live_are_ahead(
        db: Database) -> None:
    both = Projection("both", topics=["t"], tables=[ride_history, driver_trips])
    fresh_metadata, tables = fresh_tables(both)
    async with db.engine.begin() as conn:
        await conn.run_sync(fresh_metadata.create_all)
    now = datetime.now(UTC)
    async with db.transaction() as session:
        await session.execute(insert(ride_history).values(
            ride_id="old", passenger_id="p", status="requested", events=1))
        await session.execute(insert(tables[ride_history]).values(
            ride_id="new", passenger_id="p", status="completed", driver_id="d", events=2))
        await session.execute(insert(tables[driver_trips]).values(
            driver_id="d", trips=1, earned_cents=5))
        await session.execute(insert(POSITIONS), [
            {"projection": "both", "topic": "t", "partition": 0, "next_offset": 3,
             "updated_at": now},
            {"projection": "both", "topic": "t", "partition": 1, "next_offset": 1,
             "updated_at": now},
            {"projection": "both#rebuild", "topic": "t", "partition": 0, "next_offset": 2,
             "updated_at": now}])
    with pytest.raises(_BehindError, match=r"further on at \[\('t', 0\), \('t', 1\)\]"):
        await _swap(both, db, tables, {("t", 0): 2})
    assert await _rows(db, ride_history) == [("old", "p", "requested", None, 1)]
    await _swap(both, db, tables, {("t", 0): 3, ("t", 1): 1})
    assert await _rows(db, ride_history) == [("new", "p", "completed", "d", 2)]
    assert await _rows(db, driver_trips) == [("d", 1, 5)]
    assert await _positions(db) == {("both", 0): 2}


async def test_while_replaying_a_statement_naming_a_live_table_is_refused(
        db: Database) -> None:
    history = Projection("history", topics=["t"], tables=[ride_history])
    fresh_metadata, tables = fresh_tables(history)
    async with db.engine.begin() as conn:
        await conn.run_sync(fresh_metadata.create_all)
    with _refusing(db, history):
        async with db.session() as session:
            await session.execute(select(tables[ride_history]))
            await session.execute(select(driver_trips))  # not the projection's
            with pytest.raises(RebuildFailedError, match="names its live table ride_history"):
                await session.execute(select(ride_history.c.ride_id))
    async with db.session() as session:
        await session.execute(select(ride_history))  # the guard is gone with the replay


async def test_on_postgresql_a_swap_moves_an_integer_keys_sequence_past_the_copied_keys(
) -> None:
    table = Table("trips", service_metadata("reads"), Column("id", Integer, primary_key=True))
    session = PostgresStatements()
    with pytest.raises(SentError):
        await _move_sequence(session, table)
    sql, params = _on_postgresql(session.statements[0])
    assert sql.startswith("SELECT setval(pg_get_serial_sequence(")
    assert "coalesce(max(reads.trips.id), " in sql
    assert sql.endswith("max(reads.trips.id) IS NOT NULL) AS setval_1 FROM reads.trips")
    assert params == ["reads.trips", "id", 1]
    bare = Table("trips", MetaData(), Column("id", Integer, primary_key=True))
    with pytest.raises(SentError):
        await _move_sequence(session, bare)
    assert _on_postgresql(session.statements[1])[1] == ["trips", "id", 1]
    keyed = Table("codes", MetaData(), Column("code", String(8), primary_key=True))
    await _move_sequence(session, keyed)  # no sequence behind a string key
    assert len(session.statements) == 2


def _on_postgresql(statement: Any) -> tuple[str, list[Any]]:
    compiled = statement.compile(dialect=postgresql.dialect())
    return " ".join(str(compiled).split()), list(compiled.params.values())
