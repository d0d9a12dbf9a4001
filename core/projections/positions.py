"""Where each projection is, per topic partition: the next offset to apply, stored in the
service's database and moved in the same transaction as the projection's rows.

`advance` is a compare-and-set: it moves a position only from the offset its caller read,
so a runner whose view is stale (a rebuild swapped new rows and positions in, a second
instance applied the same records) learns it from the rowcount instead of applying twice.
It is the first write of its transaction, and a swap also writes positions before rows, so
both lock in one order (no deadlock on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import table_key
from core.projections.errors import PositionConflictError, ProjectionSetupError

POSITIONS = "projection_positions"
Partition = tuple[str, int]
"""(topic, partition)."""


def positions_table(metadata: MetaData) -> Table:
    """The positions table in `metadata` (declared once, returned on later calls): declare it
    in the service's models beside its projections' tables, so its migrations create it."""
    existing = metadata.tables.get(table_key(metadata, POSITIONS))
    if existing is not None:
        return existing
    return Table(
        POSITIONS,
        metadata,
        Column("projection", String(200), primary_key=True),
        Column("topic", String(249), primary_key=True),
        Column("partition", Integer, primary_key=True, autoincrement=False),
        Column("next_offset", BigInteger, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )


def declared_positions(metadata: MetaData) -> Table:
    """The positions table `metadata` declares; `ProjectionSetupError` when it has none."""
    table = metadata.tables.get(table_key(metadata, POSITIONS))
    if table is None:
        raise ProjectionSetupError(
            f"the service's metadata has no {POSITIONS} table: declare "
            "positions_table(Base.metadata) (core.projections) in its models, then make a "
            "migration")
    return table


async def load(session: AsyncSession, table: Table, key: str) -> dict[Partition, int]:
    """The stored next offsets of projection `key`."""
    rows = await session.execute(
        select(table.c.topic, table.c.partition, table.c.next_offset)
        .where(table.c.projection == key))
    return {(topic, partition): offset for topic, partition, offset in rows}


async def advance(session: AsyncSession, table: Table, key: str, where: Partition,
                  expected: int | None, to: int) -> None:
    """Move `key`'s position on `where` from `expected` (None: no position stored yet) to
    `to`, or raise `PositionConflictError` when it is not at `expected`."""
    topic, partition = where
    now = datetime.now(UTC)
    if expected is None:  # no savepoint: on SQLite one outside BEGIN would commit on release
        dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" \
            else sqlite_insert
        result = await session.execute(dialect_insert(table).values(
            projection=key, topic=topic, partition=partition, next_offset=to,
            updated_at=now).on_conflict_do_nothing())
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise PositionConflictError(f"{key} {topic}/{partition}: already stored")
        return
    result = await session.execute(
        update(table)
        .where(table.c.projection == key, table.c.topic == topic,
               table.c.partition == partition, table.c.next_offset == expected)
        .values(next_offset=to, updated_at=now))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise PositionConflictError(f"{key} {topic}/{partition}: not at {expected}")


async def replace(session: AsyncSession, table: Table, key: str, source: str) -> None:
    """Make `source`'s positions `key`'s (a rebuild's, at its swap): `key`'s rows go first,
    then `source`'s are renamed."""
    await session.execute(delete(table).where(table.c.projection == key))
    await session.execute(update(table).where(table.c.projection == source)
                          .values(projection=key, updated_at=datetime.now(UTC)))


async def forget(session: AsyncSession, table: Table, key: str) -> None:
    await session.execute(delete(table).where(table.c.projection == key))


def lag(positions: Mapping[Partition, int], ends: Mapping[Partition, int]) -> int:
    """Records written but not applied yet, over every partition in `ends`."""
    return sum(max(0, end - positions.get(where, 0)) for where, end in ends.items())
