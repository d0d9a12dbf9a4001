"""`EventStore`: append to a stream with an expected version, read it back, upcast.

Appends run in the caller's transaction (its `AsyncSession`): the events, their outbox rows
and whatever else the caller writes commit together or not at all.

Concurrency is the primary key's job, not a read's: an append inserts positions
`expected + 1 .. expected + n`; a writer that appended first owns those positions, so the
later one's insert conflicts (on PostgreSQL it waits for the first transaction, then sees
its rows; on SQLite the write lock serializes the two). `ON CONFLICT DO NOTHING` keeps the
caller's transaction usable, so the store can remove what it did insert and say which
version it found. Of any number of writers with one expected version, exactly one wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Insert, MetaData, bindparam, delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.errors import constraint_violation
from core.event_sourcing.errors import (
    DuplicateEventError,
    StreamConflictError,
    UnreadableEventError,
)
from core.event_sourcing.snapshots import SnapshotStore
from core.event_sourcing.tables import events_table
from core.messaging import BaseEvent, DeserializationError, EventSerializer, OutboxWriter
from core.messaging.events import correlated
from core.messaging.types import HEADER_EVENT_TYPE, HEADER_EVENT_VERSION

NO_STREAM = 0
"""`expected_version` for a stream that must not exist yet (a stream's version is its number
of events)."""


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One stored event, as read: upcast to the newest version this process knows."""

    stream_id: str
    position: int
    """The event's place in its stream, from 1: the stream's version once it was appended."""
    event: BaseEvent[Any]
    recorded_at: datetime


class EventStore:
    """Streams of typed events in a service's own database.

    `serializer` encodes events and, on read, upcasts old stored versions with its
    registry's upcasters. With an `outbox` (and the `topic` it writes to), every appended
    event is also added to the service's transactional outbox in the append's transaction,
    keyed by its stream id, so the relay publishes one stream's events in order. Without
    one the store only stores.

    Stateless per call and safe to share between tasks; each call uses only the session it
    is given.
    """

    def __init__(self, metadata: MetaData, serializer: EventSerializer, *,
                 outbox: OutboxWriter | None = None, topic: str | None = None) -> None:
        if (outbox is None) != (topic is None):
            raise ValueError("an outbox needs a topic to write to, and a topic an outbox")
        self.table = events_table(metadata)
        self.snapshots = SnapshotStore(metadata)
        self.serializer = serializer
        self._outbox = outbox
        self._topic = topic
        self._inserts: dict[str, Insert] = {}

    async def append(self, session: AsyncSession, stream_id: str,
                     events: Sequence[BaseEvent[Any]], expected_version: int) -> int:
        """Append `events` to `stream_id`, which must be at `expected_version` (`NO_STREAM`:
        must not exist yet); returns the stream's new version. Raises `StreamConflictError`
        when it is not, having written nothing (the transaction stays usable).
        Appending no events writes and checks nothing."""
        if expected_version < 0:
            raise ValueError(f"expected_version must be >= 0, not {expected_version}")
        if not events:
            return expected_version
        events = [correlated(event) for event in events]
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        for position, event in enumerate(events, expected_version + 1):
            cls = type(event)
            payload, _ = self.serializer.serialize(event)
            rows.append({"stream_id": stream_id, "position": position,
                         "event_id": str(event.event_id), "event_type": cls.EVENT_TYPE,
                         "event_version": cls.EVENT_VERSION, "payload": payload,
                         "recorded_at": now, "prior_stream": stream_id,
                         "prior_position": expected_version})
        try:
            result = (await session.execute(self._insert(session),
                                            rows[0] if len(rows) == 1 else rows)).all()
        except IntegrityError as exc:
            if constraint_violation(exc).kind == "unique":
                raise DuplicateEventError(
                    f"stream {stream_id!r}: an event with one of these ids is stored") from exc
            raise
        written = [row.position for row in result]
        # `prior` is false when the stream has no event at `expected_version`: the caller's
        # version is ahead of the stream, and appending would leave a gap.
        if len(written) < len(events) or (expected_version and not result[0].prior):
            if written:
                await session.execute(delete(self.table).where(
                    self.table.c.stream_id == stream_id, self.table.c.position.in_(written)))
            raise StreamConflictError(stream_id, expected_version,
                                      await self.version(session, stream_id))
        if self._outbox is not None and self._topic is not None:
            for event in events:
                await self._outbox.add(session, self._topic, event, key=stream_id)
        return expected_version + len(events)

    async def read(self, session: AsyncSession, stream_id: str, *, after: int = 0,
                   limit: int | None = None) -> list[RecordedEvent]:
        """The events of `stream_id` after position `after`, in stream order, each upcast
        to the newest version known here; empty if there are none. Raises
        `UnreadableEventError` for an event this process cannot decode."""
        t = self.table
        query = (select(t.c.position, t.c.event_type, t.c.event_version, t.c.payload,
                        t.c.recorded_at)
                 .where(t.c.stream_id == stream_id, t.c.position > after)
                 .order_by(t.c.position))
        if limit is not None:
            query = query.limit(limit)
        rows = (await session.execute(query)).all()
        return [RecordedEvent(stream_id, row.position, self._decode(stream_id, row),
                              row.recorded_at) for row in rows]

    async def version(self, session: AsyncSession, stream_id: str) -> int:
        """The stream's current version: its number of events, `NO_STREAM` if it has none."""
        t = self.table
        found = await session.scalar(
            select(func.max(t.c.position)).where(t.c.stream_id == stream_id))
        return int(found or NO_STREAM)

    def _decode(self, stream_id: str, row: Any) -> BaseEvent[Any]:
        event_type, version = row.event_type.encode(), str(row.event_version).encode()
        headers = [(HEADER_EVENT_TYPE, event_type), (HEADER_EVENT_VERSION, version)]
        try:
            return self.serializer.deserialize_as(row.payload, headers, event_type, version)
        except DeserializationError as exc:
            raise UnreadableEventError(stream_id, row.position, str(exc)) from exc

    def _insert(self, session: AsyncSession) -> Insert:
        """`INSERT .. ON CONFLICT (stream_id, position) DO NOTHING RETURNING position,
        <the stream has an event at the expected version>`: one round trip for one event,
        one batch for several (SQLAlchemy's insertmanyvalues); built once per dialect, its
        values left to the parameters so SQLAlchemy compiles it once too."""
        dialect = session.get_bind().dialect.name
        cached = self._inserts.get(dialect)
        if cached is not None:
            return cached
        t = self.table
        prior = t.alias("prior")
        at_expected = exists().where(prior.c.stream_id == bindparam("prior_stream"),
                                     prior.c.position == bindparam("prior_position"))
        make = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = (make(t)
                     .on_conflict_do_nothing(index_elements=[t.c.stream_id, t.c.position])
                     .returning(t.c.position, at_expected.label("prior")))
        self._inserts[dialect] = statement
        return statement
