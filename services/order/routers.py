"""HTTP routes of the order service: thin; the rules live in rules.py, the ride in sagas.py.

Who may do what: `orders:place` to place an order and cancel one's own; `orders:read` to
read one's own orders (as passenger, or as the assigned driver) and one's trips; the assigned
driver completes the trip; `orders:manage` (admins) reads any order and its events. An order
the caller may not read is a 404, as if it did not exist.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.bases import (
    ConflictError,
    DatabaseDep,
    NotFoundError,
    SessionDep,
    SnapshotDep,
    error_responses,
)
from core.db import uuid7
from core.event_sourcing import RecordedEvent, StreamConflictError
from core.saga import SagaNotFoundError, SagaStateError
from core.security import CurrentUser, Principal, require_permission
from services.order.deps import OrdersDep, OutboxWriterDep, SagasDep, SettingsDep
from services.order.events import DRIVER_COMMANDS, CompleteTrip, OrderRef
from services.order.models import driver_trips, order_history
from services.order.projections import STATUS
from services.order.rules import OPEN, Order, OrderStateError, may_read
from services.order.sagas import PASSENGER_CANCELLED, RIDE, RideData
from services.order.schemas import (
    EventList,
    HistoryEntry,
    OrderCreate,
    OrderList,
    OrderPublic,
    OrderSummary,
    StoredEvent,
)

MANAGE = "orders:manage"

router = APIRouter(prefix="/orders", tags=["orders"])
can_read = [Depends(require_permission("orders:read"))]
can_place = [Depends(require_permission("orders:place"))]


def public(order: Order, events: list[RecordedEvent]) -> OrderPublic:
    history = [HistoryEntry(status="pending", at=events[0].recorded_at)] if events else []
    for recorded in events[1:]:
        status = STATUS.get(type(recorded.event))
        if status is not None:
            history.append(HistoryEntry(status=status, at=recorded.recorded_at,
                                        reason=getattr(recorded.event.data, "reason", None)))
    assert order.pickup is not None and order.dropoff is not None
    return OrderPublic(id=order.id, status=order.status, passenger_id=order.passenger_id,
                       pickup=order.pickup, dropoff=order.dropoff, driver_id=order.driver_id,
                       reason=order.reason, history=history)


async def visible(session: AsyncSession, orders: OrdersDep, order_id: uuid.UUID,
                  principal: Principal) -> Order:
    order = await orders.find(session, str(order_id))
    if order is None or not may_read(order, principal.subject,
                                     admin=principal.has_permission(MANAGE)):
        raise NotFoundError(f"no order {order_id}")
    return order


async def shown(session: AsyncSession, orders: OrdersDep, order: Order) -> OrderPublic:
    return public(order, await orders.store.read(session, orders.stream_id(order.id)))


@router.post("", status_code=202, response_model=OrderPublic, dependencies=can_place,
             responses=error_responses(400, 401, 403, 422))
async def place(data: OrderCreate, principal: CurrentUser, session: SessionDep,
                orders: OrdersDep, sagas: SagasDep, settings: SettingsDep) -> OrderPublic:
    """Place an order: it is stored `pending` and its ride saga begins in the same
    transaction; the saga reserves a driver and confirms it, or ends it with a reason."""
    order = Order.place(str(uuid7()), principal.subject, data.pickup, data.dropoff)
    await orders.save(session, order)
    await sagas.begin(session, RIDE, RideData(
        order_id=order.id, lat=data.pickup.lat, lon=data.pickup.lon,
        radius_km=settings.pickup_radius_km), saga_id=order.id)
    return await shown(session, orders, order)


@router.get("", response_model=OrderList, dependencies=can_read,
            responses=error_responses(401, 403, 422))
async def my_orders(principal: CurrentUser, session: SessionDep,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50) -> OrderList:
    """The caller's orders as a passenger, newest first (a read model: it follows the
    orders' events a moment behind)."""
    t = order_history
    rows = (await session.execute(select(t).where(t.c.passenger_id == principal.subject)
                                  .order_by(t.c.placed_at.desc()).limit(limit))).all()
    return OrderList(data=[OrderSummary(id=r.order_id, status=r.status, driver_id=r.driver_id,
                                        reason=r.reason, updated_at=r.updated_at)
                           for r in rows])


@router.get("/trips", response_model=OrderList, dependencies=can_read,
            responses=error_responses(401, 403, 422))
async def my_trips(principal: CurrentUser, session: SessionDep,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50) -> OrderList:
    """The caller's trips as a driver, latest first (a read model)."""
    t = driver_trips
    rows = (await session.execute(select(t).where(t.c.driver_user_id == principal.subject)
                                  .order_by(t.c.updated_at.desc()).limit(limit))).all()
    return OrderList(data=[OrderSummary(id=r.order_id, status=r.status, driver_id=r.driver_id,
                                        updated_at=r.updated_at) for r in rows])


@router.get("/{order_id}", response_model=OrderPublic, dependencies=can_read,
            responses=error_responses(401, 403, 404, 422))
async def get_order(order_id: uuid.UUID, principal: CurrentUser, session: SnapshotDep,
                    orders: OrdersDep) -> OrderPublic:
    """The order and its events, read in one snapshot (its status and its events agree)."""
    order = await visible(session, orders, order_id, principal)
    return await shown(session, orders, order)


@router.get("/{order_id}/events", response_model=EventList, dependencies=can_read,
            responses=error_responses(401, 403, 404, 422))
async def order_events(order_id: uuid.UUID, principal: CurrentUser, session: SnapshotDep,
                       orders: OrdersDep) -> EventList:
    """The order's event stream, oldest first: its passenger or an admin."""
    order = await visible(session, orders, order_id, principal)
    if not (principal.is_user(order.passenger_id) or principal.has_permission(MANAGE)):
        raise NotFoundError(f"no order {order_id}")
    events = await orders.store.read(session, orders.stream_id(order.id))
    return EventList(data=[StoredEvent(
        position=e.position, event_type=e.event.EVENT_TYPE, event_id=str(e.event.event_id),
        data=e.event.data.model_dump(mode="json"), recorded_at=e.recorded_at) for e in events])


@router.post("/{order_id}/cancel", status_code=202, response_model=OrderPublic,
             dependencies=can_place, responses=error_responses(401, 403, 404, 409, 422))
async def cancel(order_id: uuid.UUID, principal: CurrentUser, database: DatabaseDep,
                 orders: OrdersDep, sagas: SagasDep) -> OrderPublic:
    """The passenger cancels an open order: its saga compensates (the driver is released),
    then the order is `cancelled`. 409 once the order is final or its saga is already
    ending."""
    async with database.reads() as session:
        order = await visible(session, orders, order_id, principal)
    if not principal.is_user(order.passenger_id):
        raise NotFoundError(f"no order {order_id}")  # the driver and admins read, not cancel
    if order.status not in OPEN:
        raise OrderStateError(f"order {order.id} is {order.status}: it cannot be cancelled")
    try:
        await sagas.cancel(order.id, PASSENGER_CANCELLED)
    except (SagaStateError, SagaNotFoundError) as exc:
        raise ConflictError(f"order {order.id} is already ending: {exc}") from exc
    async with database.snapshot() as session:
        return await shown(session, orders, await orders.load(session, order.id))


@router.post("/{order_id}/complete", response_model=OrderPublic, dependencies=can_read,
             responses=error_responses(401, 403, 404, 409, 422))
async def complete(order_id: uuid.UUID, principal: CurrentUser, session: SessionDep,
                   orders: OrdersDep, outbox: OutboxWriterDep) -> OrderPublic:
    """The assigned driver ends the trip: the order is `completed` and the driver service
    told to make the driver available again, in one transaction."""
    order = await visible(session, orders, order_id, principal)
    if order.driver_user_id is None or not principal.is_user(order.driver_user_id):
        raise NotFoundError(f"no order {order_id}")  # only its driver completes it
    order.complete()
    try:
        await orders.save(session, order)
    except StreamConflictError as exc:
        raise ConflictError(f"order {order.id} changed meanwhile; read it and try again"
                            ) from exc
    await outbox.add(session, DRIVER_COMMANDS, CompleteTrip(data=OrderRef(order_id=order.id)),
                     key=order.id)
    return await shown(session, orders, order)
