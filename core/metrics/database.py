"""Gauges read from the service's database before a scrape: the outbox and the sagas.

One query per family, bounded by `timeout` and cached for `max_age` seconds, so a storm of
scrapes costs the database one query a second. A database that does not answer gives no
sample (the alert on a missing series or on `up` fires instead) and a log line, never a
failed scrape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import MetaData, func, select

from core.db.engine import Database
from core.db.models import table_key
from core.messaging.outbox.store import MAX_ATTEMPTS, OUTBOX
from core.metrics.collectors import Snapshot, gauge

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 2.0
"""Seconds a scrape waits for the database before it goes without these samples."""
MAX_AGE = 1.0


class DatabaseSnapshot(Snapshot):
    """The outbox's backlog, oldest unsent row and parked rows, and the sagas per state (when
    the metadata declares the saga tables)."""

    def __init__(self, database: Database, metadata: MetaData, *,
                 timeout: float = SCRAPE_TIMEOUT, max_age: float = MAX_AGE) -> None:
        super().__init__()
        self.database = database
        self.outbox = metadata.tables[table_key(metadata, OUTBOX)]
        self.sagas = metadata.tables.get(table_key(metadata, "saga_instances"))
        self.timeout = timeout
        self.max_age = max_age
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:  # concurrent scrapes share one query
            now = time.monotonic()
            if self._read_at is not None and now - self._read_at < self.max_age:
                return
            self._read_at = now
            try:
                self.families = await asyncio.wait_for(self._read(), self.timeout)
            except Exception as exc:
                log.warning("metrics: the database did not answer (%s: %s); the outbox and "
                            "saga gauges are left out of this scrape", type(exc).__name__, exc)
                self.families = []

    async def _read(self) -> list[Metric]:
        t = self.outbox.c
        unsent = t.published_at.is_(None)
        query = select(func.count(), func.min(t.created_at),
                       func.count().filter(t.attempts >= MAX_ATTEMPTS)).where(unsent)
        async with self.database.session() as session:
            backlog, oldest, parked = (await session.execute(query)).one()
            families: list[Metric] = [
                gauge("kfm_outbox_backlog_rows", "Unsent outbox rows.", backlog),
                gauge("kfm_outbox_oldest_age_seconds",
                      "Age of the oldest unsent outbox row (0 when none).", _age(oldest)),
                gauge("kfm_outbox_parked_rows", "Outbox rows given up on (parked).", parked),
            ]
            if self.sagas is not None:
                s = self.sagas.c
                rows = await session.execute(
                    select(s.saga_type, s.status, func.count()).group_by(s.saga_type, s.status))
                sagas = GaugeMetricFamily("kfm_sagas", "Sagas per type and state.",
                                          labels=("saga", "state"))
                for saga, state, count in rows:
                    sagas.add_metric((saga, state), count)
                families.append(sagas)
        return families


def _age(oldest: datetime | None) -> float:
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:  # SQLite gives naive datetimes back; they were written in UTC
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - oldest).total_seconds())
