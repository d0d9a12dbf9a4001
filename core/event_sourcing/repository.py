"""`AggregateRepository`: loads aggregates from their streams and saves what they recorded."""

from __future__ import annotations

from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from core.event_sourcing.aggregate import Aggregate
from core.event_sourcing.errors import AggregateNotFoundError
from core.event_sourcing.event_store import EventStore

A = TypeVar("A", bound=Aggregate)


class AggregateRepository(Generic[A]):
    """Loads `aggregate`s (the latest snapshot, if any, plus the events after it) and saves
    their pending events with the version they were loaded at as the expected version, so a
    concurrent change makes the save fail with `StreamConflictError` instead of being lost.

    With `snapshot_every=N`, a save that takes the stream past a multiple of N also stores
    a snapshot at the new version, in the same transaction. Stateless per call.
    """

    def __init__(self, store: EventStore, aggregate: type[A], *,
                 snapshot_every: int | None = None) -> None:
        if snapshot_every is not None and snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1, not {snapshot_every}")
        self.store = store
        self.aggregate = aggregate
        self.snapshot_every = snapshot_every

    def stream_id(self, aggregate_id: str) -> str:
        """The stream that holds the aggregate's events: `<CATEGORY>-<id>`."""
        return f"{self.aggregate.CATEGORY}-{aggregate_id}"

    async def find(self, session: AsyncSession, aggregate_id: str) -> A | None:
        """The aggregate as of its last event, or None if its stream has none."""
        stream_id = self.stream_id(aggregate_id)
        aggregate: A | None = None
        after = 0
        if self.snapshot_every is not None:
            snapshot = await self.store.snapshots.load(
                session, stream_id, self.aggregate,
                schema_version=self.aggregate.SNAPSHOT_VERSION)
            if snapshot is not None and snapshot.state.id == aggregate_id:
                aggregate, after = snapshot.state, snapshot.position
                aggregate.version = after
        events = await self.store.read(session, stream_id, after=after)
        if aggregate is None:
            if not events:
                return None
            aggregate = self.aggregate(id=aggregate_id)
        for recorded in events:
            aggregate.apply(recorded.event)
        return aggregate

    async def load(self, session: AsyncSession, aggregate_id: str) -> A:
        """`find`, raising `AggregateNotFoundError` when the stream has no events."""
        aggregate = await self.find(session, aggregate_id)
        if aggregate is None:
            raise AggregateNotFoundError(self.stream_id(aggregate_id))
        return aggregate

    async def save(self, session: AsyncSession, aggregate: A) -> int:
        """Append the aggregate's pending events in the caller's transaction; returns its
        version. On `StreamConflictError` nothing was written and the aggregate still holds
        its pending events: discard it, load again and re-run the command. If the caller's
        transaction later rolls back, discard the aggregate too: its state is ahead."""
        pending = aggregate.pending
        if not pending:
            return aggregate.version
        expected = aggregate.version - len(pending)
        stream_id = self.stream_id(aggregate.id)
        version = await self.store.append(session, stream_id, pending, expected)
        aggregate.mark_saved()
        every = self.snapshot_every
        if every is not None and version // every > expected // every:
            await self.store.snapshots.save(session, stream_id, version, aggregate,
                                            schema_version=self.aggregate.SNAPSHOT_VERSION)
        return version
