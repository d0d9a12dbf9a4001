"""Reservations (the ride saga's reserve and release steps, the driver's side) on SQLite and
the real PostgreSQL, under the service's own migrations: many orders racing for few drivers
never share one, a repeated command has one effect, and a reserved driver stays out of the
nearby query and cannot free itself."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest
import pytest_asyncio
from sqlalchemy import delete, func, select

from core.bases import ConflictError
from core.db import Database
from core.messaging import EventSerializer, OutboxWriter
from services.driver.events import driver_events
from services.driver.locations import find_nearby, record_location
from services.driver.models import Base, Driver, DriverLocation, Reservation
from services.driver.rules import DriverService, NotReserved, Reserved

pytestmark = pytest.mark.asyncio(loop_scope="session")
PICKUP = (52.5200, 13.4050)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def db(database: Database) -> AsyncIterator[Database]:
    """The module's database, emptied of drivers (and so of reservations) before each test."""
    async with database.transaction() as session:
        await session.execute(delete(Reservation))
        await session.execute(delete(DriverLocation))
        await session.execute(delete(Driver))
    yield database


OUTBOX = OutboxWriter(Base.metadata, EventSerializer(driver_events()))


async def driver_at(database: Database, lat: float, lon: float,
                    status: str = "available") -> uuid.UUID:
    async with database.transaction() as session:
        driver = Driver(user_id=str(uuid.uuid4()), licence_number=uuid.uuid4().hex[:20].upper(),
                        licence_expiry=date(2030, 1, 1), vehicle_make="Kia",
                        vehicle_model="Niro", vehicle_plate="K 1", vehicle_colour="blue",
                        vehicle_year=2021, status=status)
        session.add(driver)
        await session.flush()
        await record_location(session, driver.id, lat, lon, NOW)
    return driver.id


async def reserve(database: Database, order_id: str, radius_km: float = 5.0
                  ) -> Reserved | NotReserved:
    async with database.transaction() as session:
        return await DriverService(session, OUTBOX).reserve_nearest(
            order_id, *PICKUP, radius_km)


async def end(database: Database, order_id: str, outcome: str = "released") -> None:
    async with database.transaction() as session:
        await DriverService(session, OUTBOX).end_reservation(order_id, outcome)  # type: ignore[arg-type]


async def status_of(database: Database, driver_id: uuid.UUID) -> str:
    async with database.session() as session:
        return str(await session.scalar(select(Driver.status).where(Driver.id == driver_id)))


async def test_thirty_orders_racing_for_ten_drivers_reserve_each_driver_once(
        db: Database) -> None:
    drivers = {await driver_at(db, PICKUP[0] + i * 0.001, PICKUP[1]) for i in range(10)}
    await driver_at(db, PICKUP[0] + 0.002, PICKUP[1], status="offline")
    await driver_at(db, PICKUP[0] + 1.0, PICKUP[1])  # 111 km away: never a candidate

    answers = await asyncio.gather(*(reserve(db, f"order-{i}") for i in range(30)))

    held = [a for a in answers if isinstance(a, Reserved)]
    refused = [a for a in answers if isinstance(a, NotReserved)]
    assert len(held) == 10 and len(refused) == 20
    assert {a.driver_id for a in held} == drivers
    assert {a.reason for a in refused} == {"no available driver within 5 km of the pickup"}
    async with db.session() as session:
        rows = (await session.scalars(select(Reservation))).all()
        busy = await session.scalar(select(func.count()).where(Driver.status == "busy"))
    assert len(rows) == 10 and {r.driver_id for r in rows} == drivers
    assert {r.state for r in rows} == {"active"} and busy == 10
    async with db.session() as session:
        assert await find_nearby(session, *PICKUP, 5.0, 50) == []


async def test_the_nearest_available_driver_is_reserved(db: Database) -> None:
    far = await driver_at(db, PICKUP[0] + 0.02, PICKUP[1])
    near = await driver_at(db, PICKUP[0] + 0.01, PICKUP[1])
    nearest_but_busy = await driver_at(db, *PICKUP, status="busy")

    first, second = await reserve(db, "o-1"), await reserve(db, "o-2")

    assert isinstance(first, Reserved) and first.driver_id == near
    assert isinstance(second, Reserved) and second.driver_id == far
    assert await status_of(db, nearest_but_busy) == "busy"


async def test_the_same_order_reserved_again_gets_the_driver_it_holds(db: Database) -> None:
    for i in range(3):
        await driver_at(db, PICKUP[0] + i * 0.001, PICKUP[1])

    first = await reserve(db, "order-1")
    again = await reserve(db, "order-1")

    assert isinstance(first, Reserved) and again == first
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Reservation)) == 1
        assert await session.scalar(select(func.count()).where(Driver.status == "busy")) == 1


async def test_ending_gives_the_driver_back_once(db: Database) -> None:
    driver = await driver_at(db, *PICKUP)
    assert isinstance(await reserve(db, "order-1"), Reserved)

    await end(db, "order-1", "completed")
    assert await status_of(db, driver) == "available"
    assert isinstance(await reserve(db, "order-2"), Reserved)  # free for the next order
    await end(db, "order-1", "released")  # a late or repeated release of the ended one

    assert await status_of(db, driver) == "busy"  # still held by order-2
    async with db.session() as session:
        states = dict((await session.execute(
            select(Reservation.order_id, Reservation.state))).all())
    assert states == {"order-1": "completed", "order-2": "active"}


async def test_an_order_whose_reservation_ended_is_not_given_another_driver(
        db: Database) -> None:
    await driver_at(db, *PICKUP)
    await driver_at(db, PICKUP[0] + 0.001, PICKUP[1])
    assert isinstance(await reserve(db, "order-1"), Reserved)
    await end(db, "order-1")

    late = await reserve(db, "order-1")  # a reserve command redelivered after the release

    assert late == NotReserved("the order's reservation was already released")
    async with db.session() as session:
        assert await session.scalar(select(func.count()).where(Driver.status == "busy")) == 0


async def test_releasing_an_order_that_never_held_a_driver_changes_nothing(
        db: Database) -> None:
    driver = await driver_at(db, *PICKUP, status="busy")
    await end(db, "never-reserved")
    assert await status_of(db, driver) == "busy"


async def test_no_driver_near_the_pickup_is_a_reason(db: Database) -> None:
    await driver_at(db, PICKUP[0] + 1.0, PICKUP[1])
    assert await reserve(db, "o") == NotReserved(
        "no available driver within 5 km of the pickup")
    assert await reserve(db, "o", radius_km=2.5) == NotReserved(
        "no available driver within 2.5 km of the pickup")


@pytest.mark.parametrize("to", ["available", "offline"])
async def test_a_reserved_driver_cannot_free_itself(db: Database, to: str) -> None:
    driver_id = await driver_at(db, *PICKUP)
    assert isinstance(await reserve(db, "order-1"), Reserved)
    with pytest.raises(ConflictError):
        async with db.transaction() as session:
            drivers = DriverService(session, OUTBOX)
            await drivers.change_status(await drivers.get(driver_id), to)
    assert await status_of(db, driver_id) == "busy"


async def test_a_busy_driver_without_a_reservation_may_become_available(db: Database) -> None:
    driver_id = await driver_at(db, *PICKUP, status="busy")
    async with db.transaction() as session:
        drivers = DriverService(session, OUTBOX)
        await drivers.change_status(await drivers.get(driver_id), "available")
    assert await status_of(db, driver_id) == "available"


async def test_each_reservation_and_release_publishes_the_status_change(db: Database) -> None:
    await driver_at(db, *PICKUP)
    async with db.session() as session:
        before = await session.scalar(select(func.count()).select_from(OUTBOX.table))
    await reserve(db, "order-1")
    await reserve(db, "order-1")  # the repeat publishes nothing
    await end(db, "order-1")
    await end(db, "order-1")
    async with db.session() as session:
        types = (await session.scalars(select(OUTBOX.table.c.event_type)
                                       .order_by(OUTBOX.table.c.id))).all()
    assert types[before or 0:] == ["driver.status_changed", "driver.status_changed"]
