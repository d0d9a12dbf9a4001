"""`SnapshotStore`: the latest snapshot of a stream's state, so loading an aggregate reads
the snapshot plus the events after it instead of the whole stream.

A snapshot is a cache: the events stay the truth. A snapshot written by an older shape of the
state (`schema_version` differs) or one that no longer validates is ignored, and the caller
replays the stream from the start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import MetaData, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.event_sourcing.tables import snapshots_table

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[M]):
    """A stream's state as of `position` (the events up to and including it applied)."""

    stream_id: str
    position: int
    state: M
    taken_at: datetime


class SnapshotStore:
    """Saves and loads the latest snapshot per stream, in the caller's transaction; the
    state is a pydantic model, stored as its JSON. Stateless per call."""

    def __init__(self, metadata: MetaData) -> None:
        self.table = snapshots_table(metadata)

    async def save(self, session: AsyncSession, stream_id: str, position: int,
                   state: BaseModel, *, schema_version: int = 1) -> None:
        """Keep `state` as the snapshot of `stream_id` at `position`, unless a snapshot at
        a later position is already stored (concurrent savers never move it backwards)."""
        t = self.table
        make = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        statement = make(t).values(stream_id=stream_id, position=position,
                                   schema_version=schema_version,
                                   state=state.model_dump_json().encode(),
                                   taken_at=datetime.now(UTC))
        await session.execute(statement.on_conflict_do_update(
            index_elements=[t.c.stream_id],
            set_={name: statement.excluded[name]
                  for name in ("position", "schema_version", "state", "taken_at")},
            where=t.c.position < statement.excluded.position))

    async def load(self, session: AsyncSession, stream_id: str, state_type: type[M], *,
                   schema_version: int = 1) -> Snapshot[M] | None:
        """The latest snapshot of `stream_id` as a `state_type`, or None when there is none
        or it cannot serve (another schema version, or it no longer validates)."""
        t = self.table
        row = (await session.execute(
            select(t.c.position, t.c.schema_version, t.c.state, t.c.taken_at)
            .where(t.c.stream_id == stream_id))).one_or_none()
        if row is None:
            return None
        if row.schema_version != schema_version:
            log.info("snapshot of %s is schema v%d, not v%d: replaying the stream", stream_id,
                     row.schema_version, schema_version)
            return None
        try:
            state = state_type.model_validate_json(row.state)
        except ValidationError as exc:
            log.warning("snapshot of %s does not validate as %s, replaying the stream: %s",
                        stream_id, state_type.__name__, exc)
            return None
        return Snapshot(stream_id, row.position, state, row.taken_at)
