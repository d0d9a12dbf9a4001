"""The relay lease: which of a service's relays may publish, and until when.

One row per relay group in the service's `outbox_lease` table. The holder renews it every
third of its TTL; another relay takes it over once it has expired. Expiry is stamped and judged
by the database's clock on PostgreSQL, where relays may run on hosts whose clocks disagree, and
by the process clock on SQLite, whose file lives on one host. The holder also keeps its own
monotonic deadline, so a process paused past the TTL stops publishing until it has renewed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, insert, update
from sqlalchemy.exc import IntegrityError

from core.db.engine import Database
from core.tasks import periodically

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class RelayLease:
    """One relay's claim on the lease named `name`. `holding` is what the last renewal found;
    `valid` is what a relay must check before it starts a batch."""

    def __init__(self, db: Database, table: Table, *, name: str, owner: str,
                 ttl: float) -> None:
        self.db = db
        self.table = table
        self.name = name
        self.owner = owner
        self.ttl = ttl
        self.holding = False
        self.held_until = 0.0  # monotonic: a paused process stops trusting a lapsed lease

    @property
    def valid(self) -> bool:
        """Whether the lease is held and, by this process's monotonic clock, not about to
        lapse: the last third of the TTL is a margin for the batch in flight to finish in."""
        return self.holding and time.monotonic() < self.held_until - self.ttl / 3

    async def keep(self, on_change: Callable[[], None]) -> None:
        """Acquire or renew every third of the TTL, forever; `on_change()` when this relay
        wins or loses the lease."""
        async def renew() -> None:
            asked = time.monotonic()  # before the database stamps the expiry: errs early
            try:
                holding = await self.acquire()
            except Exception:
                log.exception("outbox lease renewal failed")
                holding = False
            self.held_until = asked + self.ttl if holding else 0.0
            if holding != self.holding:
                log.info("outbox relay %s %s the lease", self.owner,
                         "holds" if holding else "lost")
                self.holding = holding
                on_change()

        await periodically(renew, self.ttl / 3, log=log,
                           failed=f"outbox relay {self.owner}: reacting to the lease failed")

    async def acquire(self) -> bool:
        """Take the lease if it is free or expired, or renew it if ours."""
        lease, now = self.table, self._clock()
        until = now + timedelta(seconds=self.ttl)
        async with self.db.transaction() as session:
            renewed = await session.execute(
                update(lease)
                .where(lease.c.name == self.name)
                .where((lease.c.owner == self.owner) | (lease.c.expires_at < now))
                .values(owner=self.owner, expires_at=until)
            )
            if renewed.rowcount:  # type: ignore[attr-defined]
                return True
        try:
            async with self.db.transaction() as session:
                await session.execute(
                    insert(lease).values(name=self.name, owner=self.owner, expires_at=until))
            return True
        except IntegrityError:
            return False  # someone else holds it

    async def release(self) -> None:
        """Hand the lease back at once (it expires a second ago), if it is still ours."""
        lease = self.table
        async with self.db.transaction() as session:
            await session.execute(
                update(lease).where(lease.c.name == self.name, lease.c.owner == self.owner)
                .values(expires_at=self._clock() - timedelta(seconds=1)))
        self.holding = False

    def _clock(self) -> Any:
        """The database's clock on PostgreSQL, the process clock on SQLite."""
        return func.now() if self.db.dialect == "postgresql" else _now()
