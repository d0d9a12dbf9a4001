"""What the driver service does with `driver.locations`: keep the latest-location read model.

Reports come from this service's own HTTP route and from other producers (devices publishing
straight to Kafka). The handler runs on every delivery, without an inbox row (`once=False`):
at the rate locations arrive, an inbox row per report would double the writes and grow a table
for nothing, and the write needs none, since `record_location` is idempotent and keeps the
latest report whatever the order; and it is batched with the other reports in flight
(`LocationWriter`, the running service's, from `ctx.runtime`). A report of an unknown driver
is dropped. A record the HTTP route wrote already (header `APPLIED_HEADER`) is skipped: its
row was committed before it was produced.
"""

from __future__ import annotations

import logging
import uuid

from core.messaging import HandlerRegistry, MessageContext
from services.driver.events import DriverLocationReported, driver_events
from services.driver.locations import Report
from services.driver.writer import LOCATION_WRITER

log = logging.getLogger(__name__)

APPLIED_HEADER = "x-driver-read-model"
"""Set (to "applied") on reports whose row the producer already wrote."""
HANDLER_NAME = "driver.location_read_model"

events = driver_events()
handlers = HandlerRegistry(events)
"""The service's handlers, on the one registry it decodes with (`events`)."""


@handlers.handles(DriverLocationReported, name=HANDLER_NAME, once=False)
async def keep_latest_location(event: DriverLocationReported, ctx: MessageContext) -> None:
    if ctx.record.header(APPLIED_HEADER) == "applied":
        return
    data = event.data
    try:
        driver_id = uuid.UUID(data.driver_id)
    except ValueError:
        log.warning("location for %r ignored: not a driver id", data.driver_id)
        return
    report = Report(driver_id, data.lat, data.lon, data.recorded_at)
    if not await ctx.runtime[LOCATION_WRITER].write(report):
        log.debug("location of %s not stored: unknown driver or not the latest", driver_id)
