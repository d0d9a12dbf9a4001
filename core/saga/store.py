"""The saga tables, read and written: one conditional UPDATE per transition.

Every write that moves a saga is `UPDATE ... WHERE id = :id AND version = :read`, bumping the
version: of two orchestrators (or a reply and the sweeper) that read the same version, the
database lets exactly one update it, and the other sees no row changed and does nothing (its
transaction writes no history and no command). The instance and its history are written in
the caller's transaction, with the outbox row of the next command.

Times: on PostgreSQL deadlines are stamped and compared by the database's clock, since
orchestrators on several hosts share them; on SQLite, whose file lives on one host, by the
process clock (as the outbox lease does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Database
from core.saga.tables import ACTIVE, CAUSES, COMPENSATING, NEEDS_ATTENTION, SagaTables


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """One saga instance as stored."""

    id: str
    saga_type: str
    data: dict[str, Any]
    status: str
    step: int
    command_id: str | None
    deadline: datetime | None
    attempts: int
    version: int
    last_error: str | None
    correlation_id: str | None
    created_at: datetime
    updated_at: datetime
    trace_context: str | None = None
    """The `traceparent` current when it began (`core.tracing.resumed` continues it)."""
    cause: StepEntry | None = None
    """Why the saga turned back: the first failed, timed_out or cancelled entry of its
    history. Set on the record a definition's `on_end` receives (the orchestrator reads it in
    the ending transaction); None for a completed saga and on records read any other way."""

    @classmethod
    def of(cls, row: Any) -> SagaRecord:
        return cls(row.id, row.saga_type, dict(row.data), row.status, row.step, row.command_id,
                   _aware(row.deadline), row.attempts, row.version, row.last_error,
                   row.correlation_id, _aware(row.created_at) or row.created_at,
                   _aware(row.updated_at) or row.updated_at, row.trace_context)


@dataclass(frozen=True, slots=True)
class StepEntry:
    """One transition in a saga's history."""

    step: int
    step_name: str
    event: str
    status: str
    detail: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Change:
    """What one transition writes to the instance row."""

    status: str
    step: int
    data: dict[str, Any]
    command_id: str | None
    wait: float | None
    """Seconds from now to the deadline; None clears it (nothing to wait for)."""
    attempts: int
    last_error: str | None


class SagaStore:
    """Reads and writes `tables` on `db`. Stateless; safe for concurrent use."""

    def __init__(self, db: Database, tables: SagaTables) -> None:
        self.db = db
        self.instances = tables.instances
        self.steps = tables.steps

    def now(self) -> Any:
        """The database's clock on PostgreSQL, the process clock on SQLite."""
        return func.now() if self.db.dialect == "postgresql" else datetime.now(UTC)

    def _deadline(self, wait: float | None) -> Any:
        if wait is None:
            return None
        return self.now() + timedelta(seconds=wait)

    async def insert(self, session: AsyncSession, record_id: str, saga_type: str,
                     data: dict[str, Any], change: Change, correlation_id: str | None,
                     trace_context: str | None = None) -> None:
        now = self.now()
        await session.execute(insert(self.instances).values(
            id=record_id, saga_type=saga_type, data=data, status=change.status,
            step=change.step, command_id=change.command_id,
            deadline=self._deadline(change.wait), attempts=change.attempts, version=1,
            last_error=change.last_error, correlation_id=correlation_id,
            trace_context=trace_context, created_at=now, updated_at=now))

    async def get(self, session: AsyncSession, saga_id: str) -> SagaRecord | None:
        row = (await session.execute(
            select(self.instances).where(self.instances.c.id == saga_id))).first()
        return SagaRecord.of(row) if row is not None else None

    async def load(self, saga_id: str) -> SagaRecord | None:
        async with self.db.session() as session:
            return await self.get(session, saga_id)

    async def move(self, session: AsyncSession, record: SagaRecord, change: Change) -> bool:
        """Apply `change` if the row is still at `record.version`; False when another
        transition got there first (then nothing is written)."""
        t = self.instances
        done = await session.execute(
            update(t).where(t.c.id == record.id, t.c.version == record.version).values(
                status=change.status, step=change.step, data=change.data,
                command_id=change.command_id, deadline=self._deadline(change.wait),
                attempts=change.attempts, last_error=change.last_error,
                version=record.version + 1, updated_at=self.now()))
        return bool(done.rowcount)  # type: ignore[attr-defined]

    async def log(self, session: AsyncSession, saga_id: str,
                  entries: Sequence[tuple[int, str, str, str, str | None]]) -> None:
        """Append history rows: (step, step name, event, status after, detail)."""
        if not entries:
            return
        await session.execute(insert(self.steps).values(at=self.now()), [
            {"saga_id": saga_id, "step": step, "step_name": name, "event": event,
             "status": status, "detail": detail}
            for step, name, event, status, detail in entries])

    async def cause(self, session: AsyncSession, saga_id: str) -> StepEntry | None:
        """The first history entry that turned the saga back (see `SagaRecord.cause`)."""
        s = self.steps
        row = (await session.execute(
            select(s).where(s.c.saga_id == saga_id, s.c.event.in_(CAUSES))
            .order_by(s.c.id).limit(1))).first()
        return _entry(row) if row is not None else None

    async def due(self, limit: int) -> list[tuple[str, int]]:
        """(id, version) of active sagas whose deadline has passed, the most overdue first:
        acting on one is a move from that version, so a saga that moved since is left be."""
        t = self.instances
        async with self.db.session() as session:
            rows = (await session.execute(
                select(t.c.id, t.c.version)
                .where(t.c.status.in_(ACTIVE), t.c.deadline <= self.now())
                .order_by(t.c.deadline).limit(limit))).all()
        return [(row.id, row.version) for row in rows]

    async def rearm(self, saga_id: str) -> bool:
        """Put a `needs_attention` saga back to compensating, its attempts back to zero and
        due now, with a history row: the next sweep of a running orchestrator sends its
        compensation again. For tools without the saga's definition (the command line);
        False when the saga is not stuck."""
        t = self.instances
        async with self.db.transaction() as session:
            row = (await session.execute(
                update(t).where(t.c.id == saga_id, t.c.status == NEEDS_ATTENTION)
                .values(status=COMPENSATING, command_id=None, attempts=0, deadline=self.now(),
                        version=t.c.version + 1, updated_at=self.now())
                .returning(t.c.step))).first()
            if row is None:
                return False
            await self.log(session, saga_id, [(row.step, "", "retried", COMPENSATING,
                                               "by an operator, at the next sweep")])
        return True

    async def find(self, *, status: str | None = None, saga_type: str | None = None,
                   limit: int = 50, offset: int = 0) -> list[SagaRecord]:
        """Instances, the newest first."""
        t = self.instances
        query = select(t).order_by(t.c.created_at.desc(), t.c.id.desc())
        if status is not None:
            query = query.where(t.c.status == status)
        if saga_type is not None:
            query = query.where(t.c.saga_type == saga_type)
        async with self.db.session() as session:
            rows = (await session.execute(query.limit(limit).offset(offset))).all()
        return [SagaRecord.of(row) for row in rows]

    async def count(self) -> dict[str, int]:
        """How many instances are in each status."""
        t = self.instances
        async with self.db.session() as session:
            rows = (await session.execute(
                select(t.c.status, func.count()).group_by(t.c.status))).all()
        return {status: int(n) for status, n in rows}

    async def history(self, saga_id: str) -> list[StepEntry]:
        s = self.steps
        async with self.db.session() as session:
            rows = (await session.execute(
                select(s).where(s.c.saga_id == saga_id).order_by(s.c.id))).all()
        return [_entry(r) for r in rows]


def _entry(row: Any) -> StepEntry:
    return StepEntry(row.step, row.step_name, row.event, row.status, row.detail,
                     _aware(row.at) or row.at)
