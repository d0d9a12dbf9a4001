"""`event_store_tables`: the event store's tables, declared in a service's own metadata with
one call, so its Alembic history creates them (`python -m core makemigrations`) and no table
is shared between services.

`stored_events` is keyed by `(stream_id, position)`: that primary key is what makes an
append with a stale expected version fail, in the database, whatever the race. Position `n`
is the stream's `n`-th event (from 1), so a stream's version is its highest position.
`snapshots` holds the latest snapshot per stream; it is a cache, never the truth.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table

from core.db import UtcDateTime
from core.db.models import table_key

EVENTS = "stored_events"
SNAPSHOTS = "snapshots"


class EventStoreTables(NamedTuple):
    events: Table
    """Every event of every stream, in stream order: the truth."""
    snapshots: Table
    """The latest snapshot of each stream's state, with the position it covers."""


def events_table(metadata: MetaData) -> Table:
    """The events table in `metadata` (created once, returned on later calls)."""
    existing = metadata.tables.get(table_key(metadata, EVENTS))
    if existing is not None:
        return existing
    return Table(
        EVENTS,
        metadata,
        Column("stream_id", String(255), primary_key=True),
        Column("position", Integer, primary_key=True, autoincrement=False),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("event_type", String(255), nullable=False),
        Column("event_version", Integer, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("recorded_at", UtcDateTime(), nullable=False),
    )


def snapshots_table(metadata: MetaData) -> Table:
    """The snapshots table in `metadata` (created once, returned on later calls)."""
    existing = metadata.tables.get(table_key(metadata, SNAPSHOTS))
    if existing is not None:
        return existing
    return Table(
        SNAPSHOTS,
        metadata,
        Column("stream_id", String(255), primary_key=True),
        Column("position", Integer, nullable=False),
        Column("schema_version", Integer, nullable=False),
        Column("state", LargeBinary, nullable=False),
        Column("taken_at", UtcDateTime(), nullable=False),
    )


def event_store_tables(metadata: MetaData) -> EventStoreTables:
    """Declare the events and snapshots tables in `metadata`. Idempotent: a table already
    declared is returned as it is. The service's outbox comes from `messaging_tables`."""
    return EventStoreTables(events_table(metadata), snapshots_table(metadata))
