"""The order service's read models (CQRS), projected from `order.events`: each passenger's
orders (`order_history`, `GET /orders`) and each driver's trips (`driver_trips`,
`GET /orders/trips`). Rebuild one with `python -m core projections rebuild order NAME`.

Apply functions set absolute values from the event alone (its data and its timestamp), so a
rebuild arrives at the same rows and an event published twice changes nothing the second
time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, update

from core.messaging import BaseEvent
from core.projections import Projection, View
from services.order.events import (
    ORDER_EVENTS,
    OrderCancelled,
    OrderCompleted,
    OrderConfirmed,
    OrderDriverReserved,
    OrderPlaced,
    OrderRejected,
    order_events,
)
from services.order.models import driver_trips, order_history
from services.order.rules import Status

events = order_events()
history = Projection("order_history", topics=[ORDER_EVENTS], tables=[order_history],
                     events=events)
trips = Projection("driver_trips", topics=[ORDER_EVENTS], tables=[driver_trips],
                   events=events)

STATUS: dict[type[BaseEvent[Any]], Status] = {
    OrderDriverReserved: "driver_reserved", OrderConfirmed: "confirmed",
    OrderRejected: "rejected", OrderCancelled: "cancelled", OrderCompleted: "completed"}
"""The status each later event of an order leaves it in."""


@history.applies(OrderPlaced)
async def placed(event: OrderPlaced, view: View) -> None:
    rows, data = view.table(order_history), event.data
    found = await view.session.scalar(
        rows.select().with_only_columns(rows.c.order_id).where(rows.c.order_id == data.order_id))
    if found is not None:
        return  # the event again (the relay is at-least-once)
    await view.session.execute(insert(rows).values(
        order_id=data.order_id, passenger_id=data.passenger_id, status="pending",
        pickup_lat=data.pickup.lat, pickup_lon=data.pickup.lon, dropoff_lat=data.dropoff.lat,
        dropoff_lon=data.dropoff.lon, placed_at=event.timestamp, updated_at=event.timestamp))


async def _moved(event: Any, view: View) -> None:
    rows, data = view.table(order_history), event.data
    await view.session.execute(update(rows).where(rows.c.order_id == data.order_id).values(
        status=STATUS[type(event)], driver_id=data.driver_id, reason=data.reason,
        updated_at=event.timestamp))


for _kind in STATUS:
    history.add(_kind, _moved)


async def _trip(event: Any, view: View) -> None:
    rows, data = view.table(driver_trips), event.data
    if data.driver_id is None or data.driver_user_id is None:
        return  # ended before a driver was reserved: no trip
    values = {"status": STATUS[type(event)], "updated_at": event.timestamp}
    moved = await view.session.execute(
        update(rows).where(rows.c.order_id == data.order_id).values(**values))
    if not getattr(moved, "rowcount", 0):
        await view.session.execute(insert(rows).values(
            order_id=data.order_id, driver_id=data.driver_id,
            driver_user_id=data.driver_user_id, passenger_id=data.passenger_id, **values))


for _kind in STATUS:
    trips.add(_kind, _trip)
