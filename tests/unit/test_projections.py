"""Declaring projections: what a service gets wrong is refused at import or at
`create_service`, and the rebuild's fresh tables mirror the live ones under names of their
own (no clash with the live tables' indexes and constraints on either database)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    func,
)
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import service_metadata
from core.messaging.types import Record
from core.projections import Projection, ProjectionSetupError, View, positions_table
from core.projections.positions import lag
from core.projections.rebuild import MAX_NAME, fresh_tables
from tests.helpers.projections import RideCompleted, RideRequested


def declared() -> tuple[MetaData, Table]:
    metadata = service_metadata()
    positions_table(metadata)
    Table("drivers", metadata, Column("id", String(36), primary_key=True))
    table = Table("trips", metadata,
                  Column("id", Integer, primary_key=True),
                  Column("driver_id", String(36), ForeignKey("drivers.id"), index=True),
                  Column("code", String(8), unique=True),
                  Column("day", String(10)),
                  UniqueConstraint("driver_id", "day"))
    return metadata, table


@pytest.mark.parametrize("name", ["", "Trips", "1trips", "trips-per-driver", "t" * 64])
def test_a_name_that_is_no_identifier_is_refused(name: str) -> None:
    _, table = declared()
    with pytest.raises(ProjectionSetupError, match="projection name"):
        Projection(name, topics=["t"], tables=[table])


def test_a_projection_reads_a_topic_and_owns_a_table_in_one_metadata() -> None:
    _, table = declared()
    with pytest.raises(ProjectionSetupError, match="reads no topic"):
        Projection("trips", topics=[], tables=[table])
    with pytest.raises(ProjectionSetupError, match="owns no table"):
        Projection("trips", topics=["t"], tables=[])
    _, elsewhere = declared()
    with pytest.raises(ProjectionSetupError, match="different MetaData"):
        Projection("trips", topics=["t"], tables=[table, elsewhere])


def test_one_apply_function_per_event_type() -> None:
    _, table = declared()
    projection = Projection("trips", topics=["t"], tables=[table])

    @projection.applies(RideCompleted)
    async def first(event: RideCompleted, view: View) -> None: ...

    with pytest.raises(ProjectionSetupError, match=r"already applies ride\.completed"):
        projection.add(RideCompleted, first)
    assert projection.apply_for("ride.completed") is first
    assert projection.apply_for("ride.requested") is None
    assert projection.applies_type(b"ride.completed")
    assert not projection.applies_type(b"ride.requested")
    assert not projection.applies_type(b"\xff")
    assert projection.events.get("ride.completed", 1) is RideCompleted
    assert projection.event_types == ["ride.completed"]
    assert repr(projection) == "<Projection trips topics=['t']>"


def test_the_positions_table_and_the_tables_must_be_in_the_service_metadata() -> None:
    bare = service_metadata()
    table = Table("trips", bare, Column("id", Integer, primary_key=True))
    with pytest.raises(ProjectionSetupError, match=re.escape(
            "the service's metadata has no projection_positions table: declare "
            "positions_table(Base.metadata) (core.projections) in its models, then make a "
            "migration")):
        Projection("trips", topics=["t"], tables=[table]).check()
    metadata, mine = declared()
    projection = Projection("trips", topics=["t"], tables=[mine])
    projection.check(metadata)
    other = service_metadata()
    positions_table(other)
    with pytest.raises(ProjectionSetupError, match="not in the service's metadata"):
        projection.check(other)


def test_a_view_names_only_the_projections_own_tables() -> None:
    metadata, table = declared()
    fresh = Table("trips__rebuild", MetaData(), Column("id", Integer, primary_key=True))
    view = View(session=AsyncSession(), record=Record("t", 0, 0, None, None),
                tables={table: fresh})
    assert view.table(table) is fresh
    with pytest.raises(ProjectionSetupError, match=re.escape(
            "drivers is not one of this projection's tables: list it in "
            "Projection(tables=...)")):
        view.table(metadata.tables["drivers"])


def test_fresh_tables_copy_keys_indexes_and_unique_constraints_under_their_own_names() -> None:
    _, table = declared()
    _, tables = fresh_tables(Projection("trips", topics=["t"], tables=[table]))
    fresh = tables[table]
    assert fresh.name == "trips__rebuild"
    assert [c.name for c in fresh.columns] == [c.name for c in table.columns]
    assert [c.name for c in fresh.primary_key] == ["id"]
    assert not fresh.foreign_keys  # they would point at live rows
    assert sorted(_names(fresh.indexes)) == ["ix_trips__rebuild_driver_id"]
    uniques = [c for c in fresh.constraints if isinstance(c, UniqueConstraint)]
    assert sorted(_names(uniques)) == ["uq_trips__rebuild_code",
                                       "uq_trips__rebuild_driver_id_day"]
    live_names = _names(table.indexes) | _names(table.constraints)
    assert not live_names & (_names(fresh.indexes) | _names(fresh.constraints))


def _names(items: Any) -> set[str]:
    return {str(item.name) for item in items}


def test_a_long_table_name_gets_a_fresh_name_postgresql_accepts() -> None:
    metadata = service_metadata()
    positions_table(metadata)
    long = Table("t" * 60, metadata, Column("id", Integer, primary_key=True))
    other = Table("t" * 59 + "u", metadata, Column("id", Integer, primary_key=True))
    _, tables = fresh_tables(Projection("long", topics=["t"], tables=[long, other]))
    names = [tables[long].name, tables[other].name]
    assert all(len(n) == MAX_NAME and n.endswith("__rebuild") for n in names)
    assert names[0] != names[1]
    longest = Table("t" * 54, metadata, Column("id", Integer, primary_key=True))
    _, tables = fresh_tables(Projection("longest", topics=["t"], tables=[longest]))
    assert tables[longest].name == "t" * 54 + "__rebuild"  # fits: kept readable


def test_an_index_on_an_expression_cannot_be_rebuilt() -> None:
    metadata = service_metadata()
    positions_table(metadata)
    table = Table("codes", metadata, Column("id", Integer, primary_key=True),
                  Column("code", String(8)))
    Index("ix_codes_lower", func.lower(table.c.code))
    with pytest.raises(ProjectionSetupError,
                       match=r"^codes: index ix_codes_lower on an expression cannot be rebuilt$"):
        fresh_tables(Projection("codes", topics=["t"], tables=[table]))


def test_fresh_tables_keep_the_live_schema_and_unique_indexes() -> None:
    metadata = service_metadata("reads")
    positions_table(metadata)
    table = Table("codes", metadata, Column("id", Integer, primary_key=True),
                  Column("code", String(8), index=True, unique=True))
    _, tables = fresh_tables(Projection("codes", topics=["t"], tables=[table]))
    fresh = tables[table]
    assert fresh.schema == "reads"
    assert [(i.unique, [c.name for c in i.columns]) for i in fresh.indexes] == [
        (True, ["code"])]


def test_lag_counts_what_is_written_and_not_applied() -> None:
    assert lag({("t", 0): 5, ("t", 1): 9}, {("t", 0): 8, ("t", 1): 9, ("t", 2): 4}) == 7


def test_an_event_of_a_type_it_does_not_apply_is_not_registered() -> None:
    _, table = declared()
    projection = Projection("trips", topics=["t"], tables=[table])
    projection.add(RideRequested, _noop)
    assert projection.events.get("ride.completed", 1) is None


async def _noop(event: Any, view: View) -> None: ...
