"""What the driver service does with `driver.locations`: keep the latest-location read model.

Reports come from this service's own HTTP route and from other producers (devices publishing
straight to Kafka). The handler runs on every delivery, without an inbox row (`once=False`):
at the rate locations arrive, an inbox row per report would double the writes and grow a table
for nothing, and the write needs none, since `record_location` is idempotent and keeps the
latest report whatever the order. A record the HTTP route wrote already (header
`APPLIED_HEADER`) is skipped: its row was committed before it was produced.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from core.db.engine import Database
from core.messaging.handlers import HandlerRegistry
from core.messaging.serialization import EventRegistry
from core.messaging.types import MessageContext
from services.driver.events import DriverLocationReported
from services.driver.locations import record_location
from services.driver.models import Driver

log = logging.getLogger(__name__)

APPLIED_HEADER = "x-driver-read-model"
"""Set (to "applied") on reports whose row the producer already wrote."""
HANDLER_NAME = "driver.location_read_model"


class ReadModelWriter:
    """Applies reports to the read model. The database exists only once the service runs:
    the `read_model` hook hands it over (`attach`), and a report delivered before waits."""

    def __init__(self) -> None:
        self._database: Database | None = None
        self._ready = asyncio.Event()

    def attach(self, database: Database) -> None:
        self._database = database
        self._ready.set()

    async def __call__(self, event: DriverLocationReported, ctx: MessageContext) -> None:
        if ctx.record.header(APPLIED_HEADER) == "applied":
            return
        await self._ready.wait()
        assert self._database is not None
        data = event.data
        try:
            driver_id = uuid.UUID(data.driver_id)
        except ValueError:
            log.warning("location for %r ignored: not a driver id", data.driver_id)
            return
        async with self._database.transaction() as session:
            if await session.get(Driver, driver_id) is None:
                log.warning("location for unknown driver %s ignored", driver_id)
                return
            await record_location(session, driver_id, data.lat, data.lon, data.recorded_at)


def location_handlers(events: EventRegistry, writer: ReadModelWriter) -> HandlerRegistry:
    handlers = HandlerRegistry(events)
    handlers.add(DriverLocationReported, writer, name=HANDLER_NAME, once=False)
    return handlers
