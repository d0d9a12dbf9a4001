"""Rebuild: replay a projection's topics from the beginning into fresh tables, then swap them
in with their positions, in one transaction.

1. Fresh tables (`<table>__rebuild`, dropped first if an earlier rebuild left them) with the
   live tables' columns, keys, unique constraints and indexes (not their foreign keys or
   check constraints). The live projection keeps running and serving reads meanwhile.
2. A `ProjectionRunner` reads every partition from its beginning to the end it has when
   reached, applying into the fresh tables (apply functions reach them through
   `view.table(...)`; a statement naming a live table is refused while it runs, so a
   function that forgot `view.table` fails the rebuild instead of writing twice into the
   live rows), its positions stored under `<name>#rebuild`. An event it cannot apply stops
   the rebuild; nothing is swapped.
3. The swap, one transaction on PostgreSQL and SQLite alike: the projection's positions are
   locked and compared with the rebuild's; where the live runner is further on, the swap is
   called off and the rebuild reads on (swapped in from behind, the rows would stay behind
   while no new record comes to make the live runner look). Then they are replaced by the
   rebuild's (first, so it locks in the order the live runner does), each
   live table's rows are replaced by its fresh table's (`DELETE`, then `INSERT ... SELECT`),
   and a PostgreSQL sequence behind an integer key is moved past the copied keys. Readers
   see the old rows until the commit (MVCC; SQLite's WAL). Rows are copied rather than
   tables renamed so that the live tables keep the names of their indexes, constraints and
   sequences that the migrations made; the cost is one bulk copy inside the swap.
4. The live runner's next transaction finds its position moved (`PositionConflictError`),
   re-reads the swapped positions and reads on from there: nothing applied twice, nothing
   missed, whatever it had applied meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    MetaData,
    Table,
    UniqueConstraint,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.sql import visitors

from core.config import KafkaConfig
from core.db.engine import Database
from core.db.models import NAMING_CONVENTION
from core.projections import positions
from core.projections.errors import ProjectionSetupError, RebuildFailedError
from core.projections.positions import Partition
from core.projections.projection import Projection
from core.projections.runner import BATCH, ProjectionRunner

log = logging.getLogger(__name__)

SUFFIX = "__rebuild"
MAX_NAME = 63  # PostgreSQL's identifier length


def rebuild_key(projection: Projection) -> str:
    """The name the rebuild's positions are stored under until the swap."""
    return f"{projection.name}#rebuild"


def fresh_name(table: Table) -> str:
    name = table.name + SUFFIX
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(table.name.encode()).hexdigest()[:8]
    return f"{table.name[:MAX_NAME - len(SUFFIX) - 9]}_{digest}{SUFFIX}"


def fresh_tables(projection: Projection) -> tuple[MetaData, dict[Table, Table]]:
    """Empty copies of the projection's tables in a MetaData of their own."""
    live = projection.metadata
    metadata = MetaData(naming_convention=NAMING_CONVENTION, schema=live.schema)
    tables: dict[Table, Table] = {}
    for table in projection.tables:
        columns = []
        for column in table.columns:
            copy = column._copy()  # what Table.to_metadata uses; keeps types and defaults
            copy.index = copy.unique = None  # the indexes are copied below, renamed
            columns.append(copy)
        fresh = Table(fresh_name(table), metadata, *columns)
        for index in table.indexes:
            if not all(isinstance(e, Column) for e in index.expressions):  # lower(code) too
                raise ProjectionSetupError(
                    f"{table.name}: index {index.name} on an expression cannot be rebuilt")
            Index(None, *(fresh.c[c.name] for c in index.columns), unique=index.unique)
        for constraint in table.constraints:
            if isinstance(constraint, UniqueConstraint):
                fresh.append_constraint(
                    UniqueConstraint(*(fresh.c[c.name] for c in constraint.columns)))
        tables[table] = fresh
    return metadata, tables


@dataclass(frozen=True, slots=True)
class RebuildReport:
    projection: str
    applied: int
    skipped: int
    positions: dict[Partition, int]
    seconds: float


async def rebuild(projection: Projection, database: Database, kafka: KafkaConfig, *,
                  batch: int = BATCH) -> RebuildReport:  # pragma: no mutate block
    """Replay `projection` from the beginning into fresh tables and swap them in (see the
    module doc). Raises `RebuildFailedError` (nothing swapped) when an event cannot be
    applied."""
    started = time.monotonic()
    # An engine of its own: the guard against live tables must not refuse the statements of
    # a live runner sharing `database` in this process.
    own = Database(database.url.render_as_string(hide_password=False))
    try:
        runner = await _replay_and_swap(projection, own, kafka, batch)
    finally:
        await own.dispose()
    log.info("projection %s rebuilt: %d applied, %d skipped in %.1fs", projection.name,
             runner.applied, runner.skipped, time.monotonic() - started)
    return RebuildReport(projection.name, runner.applied, runner.skipped,
                         dict(runner.positions), time.monotonic() - started)


async def _replay_and_swap(projection: Projection, database: Database, kafka: KafkaConfig,
                           batch: int) -> ProjectionRunner:  # pragma: no mutate block
    metadata, tables = fresh_tables(projection)
    table = positions.declared_positions(projection.metadata)
    key = rebuild_key(projection)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
    async with database.transaction() as session:
        await positions.forget(session, table, key)
    runner = ProjectionRunner(projection, database, kafka, dead_letters=None, rebuilding=True,
                              key=key, tables=tables, batch=batch)
    try:
        while True:
            with _refusing(database, projection):
                await runner.run()
            try:
                await _swap(projection, database, tables, runner.positions)
                break
            except _BehindError as exc:
                log.info("projection %s: %s; reading on before the swap", projection.name, exc)
    except BaseException:
        async with database.transaction() as session:
            await positions.forget(session, table, key)
        raise
    finally:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
    return runner


class _BehindError(Exception):
    """The live projection is further on than the rebuild: swapping would move it back."""


async def _swap(projection: Projection, database: Database, tables: Mapping[Table, Table],
                reached: Mapping[Partition, int]) -> None:
    """Swap in the fresh rows and their positions, unless the live projection is further on
    somewhere: its runner, at the end of its topics, would not notice for want of records,
    and serve the older rows until the next event."""
    table = positions.declared_positions(projection.metadata)
    async with database.transaction() as session:
        live = await positions.hold(session, table, projection.name)
        ahead = sorted(w for w, offset in live.items() if offset > reached.get(w, -1))
        if ahead:
            raise _BehindError(f"the live projection is further on at {ahead}")
        await positions.replace(session, table, projection.name, rebuild_key(projection))
        for name in reversed(_ordered(projection)):
            await session.execute(delete(name))
        for name in _ordered(projection):
            fresh = tables[name]
            columns = [c.name for c in name.columns]
            await session.execute(insert(name).from_select(
                columns, select(*(fresh.c[c] for c in columns))))
            await _move_sequence(session, name)


def _ordered(projection: Projection) -> list[Table]:
    """The projection's tables, those referred to first."""
    order = {t: i for i, t in enumerate(projection.metadata.sorted_tables)}
    return sorted(projection.tables, key=lambda t: order.get(t, 0))


async def _move_sequence(session: Any, table: Table) -> None:
    column = table.autoincrement_column
    if column is None or session.get_bind().dialect.name != "postgresql":
        return
    name = f"{table.schema}.{table.name}" if table.schema else table.name
    most = func.max(column)
    await session.execute(select(func.setval(func.pg_get_serial_sequence(name, column.name),
                                             func.coalesce(most, 1), most.is_not(None))))


@contextmanager
def _refusing(database: Database, projection: Projection) -> Iterator[None]:
    """Refuse, on `database`, any statement naming one of the projection's live tables."""
    live = set(projection.tables)

    def check(conn: Any, clause: Any, *args: Any) -> None:
        for element in visitors.iterate(clause):
            if isinstance(element, Table) and element in live:
                raise RebuildFailedError(
                    f"projection {projection.name} names its live table {element.name} while "
                    "rebuilding: write through view.table(...)")

    engine = database.engine.sync_engine
    event.listen(engine, "before_execute", check)
    try:
        yield
    finally:
        event.remove(engine, "before_execute", check)
