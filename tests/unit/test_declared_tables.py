"""The tables core declares into a service's metadata (the event store's, the projections'
positions) are the ones the services already migrated: a change to a declaration is a schema
change every service must migrate, so it shows here first (types, lengths, nullability,
unique constraints; the keys are pinned by what the stores do on a fresh declaration, in
tests/unit/test_event_store.py). The order service's migrations are the reference."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect

from core.db import Database, migrations
from core.db.models import service_metadata
from core.event_sourcing import event_store_tables
from core.projections import positions_table


@pytest.fixture(scope="module")
async def order_schema(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    """A SQLite file the order service's migrations brought to head."""
    path: Path = tmp_path_factory.mktemp("order") / "order.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await migrations.upgrade("order", db)
    yield db
    await db.dispose()


async def _differences(db: Database, declared: MetaData) -> list[Any]:
    names = set(declared.tables)

    def ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return type_ != "table" or name in names

    def compare(connection: Any) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": ours})
        found = list(compare_metadata(context, declared))
        inspector = inspect(connection)
        for table in declared.tables.values():  # alembic lets a dropped length pass
            migrated = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
            found += [("length", table.name, column.name) for column in table.columns
                      if getattr(column.type, "length", None)
                      != getattr(migrated[column.name], "length", None)]
        return found

    async with db.engine.connect() as conn:
        return await conn.run_sync(compare)


async def test_the_event_store_tables_are_the_ones_services_migrated(
        order_schema: Database) -> None:
    declared = service_metadata()
    tables = event_store_tables(declared)
    assert (tables.events.name, tables.snapshots.name) == ("stored_events", "snapshots")
    assert set(declared.tables) == {"stored_events", "snapshots"}
    assert await _differences(order_schema, declared) == []


async def test_the_positions_table_is_the_one_services_migrated(order_schema: Database) -> None:
    declared = service_metadata()
    table = positions_table(declared)
    assert set(declared.tables) == {table.name}
    assert await _differences(order_schema, declared) == []


async def test_the_declared_tables_can_be_created(tmp_path: Path) -> None:
    """What a comparison with the migrated schema cannot see: a column without a type."""
    declared = service_metadata()
    event_store_tables(declared)
    positions_table(declared)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(declared.create_all)
    finally:
        await db.dispose()


def test_declaring_twice_returns_the_tables_already_declared() -> None:
    declared = service_metadata("orders")  # in a schema: keyed `orders.<name>`
    first = event_store_tables(declared)
    assert event_store_tables(declared) == first
    assert positions_table(declared) is positions_table(declared)
    assert sorted(declared.tables) == ["orders.projection_positions", "orders.snapshots",
                                       "orders.stored_events"]
