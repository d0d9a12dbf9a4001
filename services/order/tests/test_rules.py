"""The order's rules without I/O (the aggregate's status machine, rebuilt from its events, who
may read it) and where its saga's end leaves it (`settle`, on the service's own migrated
SQLite database: the order's stream, given the saga's end and cause)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from core.bases import ConflictError
from core.db import Database, migrations
from core.event_sourcing import AggregateRepository, EventStore
from core.messaging import EventSerializer
from core.saga import (
    COMPENSATED,
    COMPENSATING,
    COMPLETED,
    NEEDS_ATTENTION,
    SagaRecord,
    StepEntry,
)
from services.order.events import Point, order_events
from services.order.main import SERVICE_DIR
from services.order.models import Base
from services.order.rules import Order, OrderStateError, may_read
from services.order.sagas import RideData, settle

PICKUP, DROPOFF = Point(lat=52.52, lon=13.40), Point(lat=52.50, lon=13.45)


def placed(order_id: str = "o-1") -> Order:
    return Order.place(order_id, "passenger", PICKUP, DROPOFF)


def test_an_order_goes_pending_reserved_confirmed_completed() -> None:
    order = placed()
    assert (order.status, order.version) == ("pending", 1)
    order.reserve("driver-1", "driver-user")
    order.confirm()
    order.complete()
    assert order.status == "completed" and order.driver_id == "driver-1"
    assert [type(e).__name__ for e in order.pending] == [
        "OrderPlaced", "OrderDriverReserved", "OrderConfirmed", "OrderCompleted"]

    rebuilt = Order(id="o-1")
    for event in order.pending:
        rebuilt.apply(event)
    assert rebuilt.model_dump() == order.model_dump()


@pytest.mark.parametrize("moves", [
    ["confirm"],                       # nothing reserved yet
    ["complete"],                      # not confirmed
    ["reserve", "confirm", "reject"],  # confirmed orders are cancelled, not rejected
    ["reject", "cancel"],              # final
    ["reserve", "confirm", "complete", "cancel"],
    ["reserve", "reserve"],
])
def test_a_move_its_status_does_not_allow_is_a_conflict_and_records_nothing(
        moves: list[str]) -> None:
    order = placed()
    *allowed, refused = moves
    for move in allowed:
        _do(order, move)
    before = len(order.pending)
    with pytest.raises(OrderStateError) as caught:
        _do(order, refused)
    assert isinstance(caught.value, ConflictError)  # a 409 at the HTTP boundary
    assert len(order.pending) == before


def _do(order: Order, move: str) -> None:
    if move == "reserve":
        order.reserve("driver-1", "driver-user")
    elif move in ("reject", "cancel"):
        getattr(order, move)("why")
    else:
        getattr(order, move)()


def test_the_passenger_the_driver_and_an_admin_may_read_an_order_nobody_else() -> None:
    order = placed()
    order.reserve("driver-1", "driver-user")
    assert may_read(order, "passenger", admin=False)
    assert may_read(order, "driver-user", admin=False)
    assert not may_read(order, "driver-1", admin=False)  # the driver's user, not its record
    assert not may_read(order, "someone", admin=False)
    assert may_read(order, "someone", admin=True)


# -- where the saga's end leaves the order ---------------------------------------------------

@pytest_asyncio.fixture(loop_scope="session")
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'order.db'}")
    await migrations.upgrade(SERVICE_DIR, db)
    yield db
    await db.dispose()


def repository() -> AggregateRepository[Order]:
    return AggregateRepository(EventStore(Base.metadata, EventSerializer(order_events())), Order)


def record(order_id: str, status: str, cause: tuple[str, str] | None,
           last_error: str | None) -> SagaRecord:
    now = datetime.now(UTC)
    why = StepEntry(0, "reserve_driver", cause[0], COMPENSATING, cause[1], now) if cause else None
    return SagaRecord(order_id, "ride", {}, status, 0, None, None, 0, 1, last_error, None, now,
                      now, cause=why)


async def ended(db: Database, status: str, cause: tuple[str, str] | None = None,
                data: dict[str, str] | None = None, last_error: str | None = None) -> Order:
    """A placed order whose saga ended `status`, turned back by `cause` (event, detail)."""
    orders = repository()
    order = placed(f"o-{status}-{cause}")
    async with db.transaction() as session:
        await orders.save(session, order)
        ride = RideData(order_id=order.id, lat=1, lon=2, radius_km=5, **(data or {}))
        await settle(orders, session, record(order.id, status, cause, last_error), ride)
    async with db.session() as session:
        return await orders.load(session, order.id)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_completed_saga_confirms_the_order_with_its_driver(database: Database) -> None:
    order = await ended(database, COMPLETED, None, {"driver_id": "d-1", "driver_user_id": "u-1"})
    assert (order.status, order.driver_id, order.driver_user_id) == ("confirmed", "d-1", "u-1")
    assert order.version == 3  # placed, driver_reserved, confirmed


@pytest.mark.asyncio(loop_scope="session")
async def test_a_turned_back_saga_gives_its_cause_not_what_the_compensations_met(
        database: Database) -> None:
    refused = await ended(database, COMPENSATED, ("failed", "no driver within 5 km"))
    assert (refused.status, refused.reason) == ("rejected", "no driver within 5 km")
    silent = await ended(
        database, COMPENSATED, ("timed_out", "reserve_driver: no reply within 4s"),
        last_error="compensation of reserve_driver failed (attempt 2): no reply in time")
    assert (silent.status, silent.reason) == ("rejected", "reserve_driver: no reply within 4s")
    cancelled = await ended(database, COMPENSATED, ("cancelled", "cancelled by the passenger"))
    assert (cancelled.status, cancelled.reason) == ("cancelled", "cancelled by the passenger")
    stuck = await ended(database, NEEDS_ATTENTION, ("timed_out", "no reply within 4s"))
    assert stuck.status == "rejected"
    assert stuck.reason == "no reply within 4s (releasing the driver needs an operator's attention)"
