"""`LocationWriter`: every write to the latest-location read model, coalesced.

Reports arrive concurrently: HTTP requests in parallel, and the consumer's handlers run
concurrently for different keys (drivers). Written one transaction each, they queue on the
database (on SQLite, on its single write lock, whose busy handler sleeps). Here a report
waits for the transaction under way to end, then goes with every report that arrived
meanwhile in the next one (one statement, see `record_locations`): no timer, so an idle
writer adds no delay, and a busy one writes in batches that grow with the load.

`write` returns once the report's transaction committed (so a consumer commits its offset
only after the row is durable), with whether this report is what the row now holds (of two
reports of one driver in one batch, the older one is not applied, whatever their order); a
failed transaction fails every `write` of its batch. One event loop; no locks needed.
"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import select

from core.db import Database
from core.runtime import RuntimeKey
from services.driver.locations import Report, record_locations
from services.driver.models import Driver

MAX_BATCH = 500
"""Reports per transaction at most (a bound on statement size)."""


class LocationWriter:
    """Writes reports to `database`'s read model in batches."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._pending: list[tuple[Report, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, report: Report) -> bool:
        """Store `report` unless a later one is stored; whether it was. A report of a driver
        that does not exist is not stored (False)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((report, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="driver-location-writer")
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                async with self._database.transaction() as session:
                    ids = {report.driver_id for report, _ in batch}
                    known: set[uuid.UUID] = set(
                        await session.scalars(select(Driver.id).where(Driver.id.in_(ids))))
                    latest = _latest_each([r for r, _ in batch if r.driver_id in known])
                    changed = await record_locations(session, list(latest.values()))
            except Exception as exc:  # every write of the batch fails; its callers retry
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for report, future in batch:
                if not future.done():  # the row changed, and to this very report
                    future.set_result(report.driver_id in changed
                                      and latest[report.driver_id] is report)


LOCATION_WRITER = RuntimeKey("location_writer", LocationWriter)
"""The service's one writer (its HTTP route and its handler share the batches)."""


def _latest_each(reports: list[Report]) -> dict[uuid.UUID, Report]:
    """Each driver's latest report (the first of equals: a repeat is not applied twice)."""
    latest: dict[uuid.UUID, Report] = {}
    for report in reports:
        kept = latest.get(report.driver_id)
        if kept is None or report.recorded_at > kept.recorded_at:
            latest[report.driver_id] = report
    return latest
