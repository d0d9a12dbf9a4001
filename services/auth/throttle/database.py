"""Failure counts in the service's own database (no Redis): one row per key, updated by one
`INSERT ... ON CONFLICT DO UPDATE`, so concurrent failures are all counted on SQLite and
PostgreSQL alike. Each call is its own short transaction: a failed login's count must commit
although the request itself answers 401."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import and_, case, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Database
from services.auth.models import login_failures
from services.auth.throttle.base import ThrottleUnavailableError
from services.auth.throttle.policy import FailureState, ThrottlePolicy


class DatabaseFailureStore:
    """Rows of `login_failures`; stale rows are harmless (the rule ignores them), overwritten
    by the key's next failure, and deleted by `prune` (keys that never fail again, such as
    guessed emails, would otherwise grow the table for ever).

    Give it an engine of its own (`from_url`): a login holds its request's connection while
    it counts a failure, so drawing both from one pool would let a burst of logins hold every
    connection and wait for a second one, for ever (pool timeout)."""

    def __init__(self, database: Database, *, owned: bool = False) -> None:
        self.database = database
        self._owned = owned
        self._insert: Any = postgresql.insert if database.dialect == "postgresql" \
            else sqlite.insert

    async def load(self, key: str, policy: ThrottlePolicy) -> FailureState | None:
        async with self._session(commit=False) as session:
            row = (await session.execute(
                select(login_failures.c.failures, login_failures.c.window_started_at,
                       login_failures.c.last_failure_at)
                .where(login_failures.c.key == key))).first()
        return None if row is None else FailureState(row[0], row[1], row[2])

    async def record(self, key: str, policy: ThrottlePolicy, now: float) -> FailureState:
        t = login_failures
        fresh = or_(
            and_(t.c.failures >= policy.lock_after,
                 t.c.last_failure_at + policy.lock_seconds <= now),
            and_(t.c.failures < policy.lock_after,
                 now - t.c.window_started_at > policy.window_seconds))
        statement = self._insert(t).values(
            key=key, failures=1, window_started_at=now, last_failure_at=now)
        statement = statement.on_conflict_do_update(
            index_elements=[t.c.key],
            set_={
                "failures": case((fresh, 1), else_=t.c.failures + 1),
                "window_started_at": case((fresh, now), else_=t.c.window_started_at),
                "last_failure_at": now,
            },
        ).returning(t.c.failures, t.c.window_started_at, t.c.last_failure_at)
        async with self._session(commit=True) as session:
            row = (await session.execute(statement)).one()
        return FailureState(row[0], row[1], row[2])

    async def reset(self, key: str) -> None:
        async with self._session(commit=True) as session:
            await session.execute(delete(login_failures).where(login_failures.c.key == key))

    async def prune(self, older_than: float) -> int:
        """Forget every key whose last failure is before `older_than`; how many were."""
        async with self._session(commit=True) as session:
            result = await session.execute(
                delete(login_failures).where(login_failures.c.last_failure_at < older_than))
        return int(getattr(result, "rowcount", 0) or 0)

    @asynccontextmanager
    async def _session(self, *, commit: bool) -> AsyncIterator[AsyncSession]:
        """A session of its own; the database away is a 503 (ThrottleUnavailableError), not a
        500."""
        try:
            opened = self.database.transaction() if commit else self.database.session()
            async with opened as session:
                yield session
        except (DBAPIError, OSError) as e:
            raise ThrottleUnavailableError() from e

    @classmethod
    def from_url(cls, url: str) -> DatabaseFailureStore:
        return cls(Database(url), owned=True)

    async def close(self) -> None:
        if self._owned:
            await self.database.dispose()
