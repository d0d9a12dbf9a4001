"""The ride saga: reserve the nearest available driver, then confirm the order.

One remote step (`reserve_driver`, a command to the driver service on `driver.commands`,
compensated by `release`). The saga id IS the order id: the driver service keys its
reservation by the order id the command carries, so "release what this saga holds" and
"release what this order holds" are one thing. Confirming is local: when the saga completes,
its last transition records `order.driver_reserved` then `order.confirmed` in its own
transaction (`on_end`), so no order is confirmed without its driver held; a reader sees it go
from `pending` to `confirmed`, with both steps in its history. When the saga ends any other
way, the order ends in that transaction too, with the reason that turned the saga back
(`record.cause`: the driver service's refusal, "no reply within Ns", the passenger's cancel),
not whatever its compensation met later: `cancelled` when the passenger cancelled,
`rejected` otherwise (no driver near, or the driver service did not answer in time). A saga
whose release needs an operator ends the order too, saying so.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from core.saga import (
    COMPLETED,
    NEEDS_ATTENTION,
    Compensation,
    SagaDefinition,
    SagaRecord,
    SagaStep,
)
from services.order.events import (
    DRIVER_COMMANDS,
    SAGA_REPLIES,
    DriverNotReserved,
    DriverReleased,
    DriverReserved,
    OrderRef,
    ReleaseDriver,
    ReserveDriver,
    ReserveDriverData,
)
from services.order.rules import OPEN, OrderRepository

log = logging.getLogger(__name__)

RIDE = "ride"
PASSENGER_CANCELLED = "cancelled by the passenger"


class RideData(BaseModel):
    order_id: str
    lat: float
    lon: float
    radius_km: float
    driver_id: str | None = None
    driver_user_id: str | None = None
    """Set from the driver service's `driver.reserved` reply."""


def _reserve(data: RideData) -> ReserveDriver:
    return ReserveDriver(data=ReserveDriverData(order_id=data.order_id, lat=data.lat,
                                                lon=data.lon, radius_km=data.radius_km))


def _release(data: RideData) -> ReleaseDriver:
    return ReleaseDriver(data=OrderRef(order_id=data.order_id))


def _keep_driver(data: RideData, reply: DriverReserved) -> RideData:
    return data.model_copy(update={"driver_id": reply.data.driver_id,
                                   "driver_user_id": reply.data.user_id})


def ride_saga(*, reserve_timeout: float = 10.0, release_timeout: float = 10.0,
              orders: OrderRepository | None = None) -> SagaDefinition[RideData]:
    """The definition; with `orders`, the saga's end moves the order (the running service's
    one); without, it only names the replies (for `saga_replies`)."""

    async def on_end(session: AsyncSession, record: SagaRecord, data: Any) -> None:
        assert orders is not None
        await settle(orders, session, record, data)

    return SagaDefinition(RIDE, RideData, SAGA_REPLIES, [
        SagaStep("reserve_driver", DRIVER_COMMANDS, _reserve, success=DriverReserved,
                 failure=DriverNotReserved, timeout=reserve_timeout, on_success=_keep_driver,
                 compensation=Compensation(_release, success=DriverReleased,
                                           timeout=release_timeout)),
    ], on_end=on_end if orders is not None else None)


async def settle(orders: OrderRepository, session: AsyncSession, record: SagaRecord,
                 data: RideData) -> None:
    """Move the order to where its saga ended, in the saga's last transaction. A conflict on
    the order's stream (a concurrent route) raises: the transition rolls back and is retried
    (the reply redelivered, the sweep run again)."""
    order = await orders.load(session, data.order_id)
    if order.status not in OPEN:
        log.info("order %s is already %s; its saga ended %s", order.id, order.status,
                 record.status)
        return
    if record.status == COMPLETED:
        if data.driver_id is None or data.driver_user_id is None:
            raise ValueError(f"ride saga {record.id} completed without a driver")
        order.reserve(data.driver_id, data.driver_user_id)
        order.confirm()
    else:
        cause = record.cause
        reason = ((cause.detail if cause is not None else None) or record.last_error
                  or "the ride saga did not complete")
        if record.status == NEEDS_ATTENTION:
            reason += " (releasing the driver needs an operator's attention)"
        if (cause is not None and cause.event == "cancelled") or order.status != "pending":
            order.cancel(reason)
        else:
            order.reject(reason)
    await orders.save(session, order)
