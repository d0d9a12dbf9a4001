"""What the driver service does with `driver.locations`: keep the latest-location read model;
and with the ride saga's commands on `driver.commands` (at the end).

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

from core.app import OUTBOX_WRITER
from core.messaging import HandlerRegistry, MessageContext
from core.saga import participant
from services.driver.events import (
    CompleteTrip,
    DriverLocationReported,
    DriverNotReserved,
    DriverReleased,
    DriverReserved,
    DriverReservedData,
    NotReservedData,
    ReleaseDriver,
    ReservationEndedData,
    ReserveDriver,
    driver_events,
)
from services.driver.locations import Report
from services.driver.rules import DriverService, NotReserved
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


# -- the ride saga's participant (`driver.commands`) ----------------------------------------

commands = HandlerRegistry(events)
"""The ride saga's commands: each runs once (the inbox), its effect, its status event and its
reply committed in one transaction (`core.saga.participant`)."""


def _drivers(ctx: MessageContext) -> DriverService:
    return DriverService(ctx.session, ctx.runtime[OUTBOX_WRITER])


@participant(commands, ReserveDriver, name="driver.reserve")
async def reserve(command: ReserveDriver,
                  ctx: MessageContext) -> DriverReserved | DriverNotReserved:
    """Hold the nearest available driver for the order; a refusal names its reason."""
    data = command.data
    outcome = await _drivers(ctx).reserve_nearest(data.order_id, data.lat, data.lon,
                                                  data.radius_km)
    if isinstance(outcome, NotReserved):
        return command.caused(DriverNotReserved, NotReservedData(
            order_id=data.order_id, reason=outcome.reason))
    return command.caused(DriverReserved, DriverReservedData(
        order_id=data.order_id, driver_id=str(outcome.driver_id), user_id=outcome.user_id))


@participant(commands, ReleaseDriver, name="driver.release")
async def release(command: ReleaseDriver, ctx: MessageContext) -> DriverReleased:
    """Give back the driver the order holds: also when it holds none (a reserve that was
    refused or never arrived), so the saga's compensation always completes."""
    held = await _drivers(ctx).end_reservation(command.data.order_id, "released")
    return command.caused(DriverReleased, ReservationEndedData(
        order_id=command.data.order_id, outcome="none" if held is None else held.state))


@participant(commands, CompleteTrip, name="driver.complete")
async def complete(command: CompleteTrip, ctx: MessageContext) -> None:
    """The trip is over: the driver is available again. Not a saga step (the ride saga ended
    at confirmation), so nothing awaits an answer."""
    await _drivers(ctx).end_reservation(command.data.order_id, "completed")
