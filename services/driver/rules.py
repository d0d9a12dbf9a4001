"""Driver rules: one driver per user, onboarding checks, the status machine, reservations for
orders, their events."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Literal

from sqlalchemy import select, update

from core.bases import BaseRepository, BaseService, ConflictError, ValidationError
from services.driver.events import (
    EVENTS_TOPIC,
    DriverRegistered,
    DriverRegisteredData,
    DriverStatusChanged,
    DriverStatusChangedData,
)
from services.driver.locations import find_nearby
from services.driver.models import Driver, Reservation
from services.driver.schemas import DriverCreate, StatusChange

TRANSITIONS: dict[str, frozenset[str]] = {
    "offline": frozenset({"available"}),
    "available": frozenset({"busy", "offline"}),
    "busy": frozenset({"available"}),
}
"""Allowed status changes. A busy driver cannot go offline: a trip is under way and would be
left without a driver; it becomes available (trip done or handed back) first."""

RESERVE_CANDIDATES = 5
"""How many of the nearest available drivers a reservation tries, nearest first, before it
looks again: each try is a compare-and-set that a concurrent reservation may win."""
RESERVE_ROUNDS = 3
"""How many times a reservation looks for candidates again after losing every race."""


@dataclass(frozen=True, slots=True)
class Reserved:
    """The driver held for the order."""

    driver_id: uuid.UUID
    user_id: str


@dataclass(frozen=True, slots=True)
class NotReserved:
    """No driver could be held; `reason` says why, for the rider."""

    reason: str

ProfileCheck = Callable[[str], Awaitable[None]]


class DriverRepository(BaseRepository[Driver]):
    model = Driver
    filter_fields = frozenset({"status", "user_id"})
    sort_fields = frozenset({"created_at"})
    default_sort = ("-created_at",)

    async def by_user(self, user_id: str) -> Driver | None:
        found: Driver | None = await self.session.scalar(
            select(Driver).where(Driver.user_id == user_id))
        return found

    async def reservation(self, order_id: str) -> Reservation | None:
        found: Reservation | None = await self.session.get(Reservation, order_id)
        return found

    async def holds_a_reservation(self, driver_id: uuid.UUID) -> bool:
        held = await self.session.scalar(select(Reservation.order_id).where(
            Reservation.driver_id == driver_id, Reservation.state == "active").limit(1))
        return held is not None

    async def swap_status(self, driver: Driver, old: str, new: str) -> bool:
        """Set `new` only if the row still says `old` (a compare-and-set: of two concurrent
        changes from one status, one wins and the other sees a conflict)."""
        result = await self.session.execute(
            update(Driver).where(Driver.id == driver.id, Driver.status == old)
            .values(status=new).execution_options(synchronize_session=False))
        if not getattr(result, "rowcount", 0):
            return False
        await self.session.refresh(driver)
        return True


class DriverService(BaseService[Driver, DriverCreate, StatusChange]):
    repository_class = DriverRepository
    events_topic = EVENTS_TOPIC

    @property
    def drivers(self) -> DriverRepository:
        assert isinstance(self.repository, DriverRepository)
        return self.repository

    async def register(self, user_id: str, data: DriverCreate, profiles: ProfileCheck) -> Driver:
        """The caller's driver record: checked here first (cheap), then against the user
        service (the profile must exist), then inserted; the unique constraints settle races."""
        today = date.today()
        if data.licence_expiry <= today:
            raise ValidationError.for_field("licence_expiry", "the licence must not have expired "
                                            "(an expiry after today)")
        if data.vehicle.year > today.year + 1:
            raise ValidationError.for_field("vehicle.year", f"at most {today.year + 1}")
        if await self.drivers.exists(user_id=user_id):
            raise ConflictError("this user is already a driver (one driver record per user)")
        if await self.drivers.exists(licence_number=data.licence_number):
            raise ConflictError("a driver with this licence number already exists")
        await profiles(user_id)
        vehicle = data.vehicle
        driver = await self.repository.create({
            "user_id": user_id, "licence_number": data.licence_number,
            "licence_expiry": data.licence_expiry, "vehicle_make": vehicle.make,
            "vehicle_model": vehicle.model, "vehicle_plate": vehicle.plate,
            "vehicle_colour": vehicle.colour, "vehicle_year": vehicle.year, "status": "offline"})
        await self.publish_event(DriverRegistered(
            aggregate_id=str(driver.id),
            data=DriverRegisteredData(driver_id=str(driver.id), user_id=user_id,
                                      licence_number=driver.licence_number,
                                      vehicle=vehicle.model_dump())))
        return driver

    async def change_status(self, driver: Driver, new: str) -> Driver:
        """Move `driver` to `new` if the status machine allows it; setting the status it
        already has changes nothing (and publishes nothing)."""
        old = driver.status
        if new == old:
            return driver
        allowed = TRANSITIONS[old]
        if new not in allowed:
            raise ConflictError(f"a driver who is {old} cannot become {new}; from {old} the "
                                f"allowed statuses are: {', '.join(sorted(allowed))}")
        if old == "busy" and await self.drivers.holds_a_reservation(driver.id):
            raise ConflictError("the driver is reserved for an order: the order's completion "
                                "or cancellation makes the driver available")
        if not await self.drivers.swap_status(driver, old, new):
            raise ConflictError("the driver's status changed meanwhile; read it and try again")
        await self._status_changed(driver, old, new)
        return driver

    async def reserve_nearest(self, order_id: str, lat: float, lon: float,
                              radius_km: float) -> Reserved | NotReserved:
        """Hold the nearest available driver within `radius_km` of (lat, lon) for `order_id`:
        `available` -> `busy` by compare-and-set, so of two orders racing for one driver one
        gets it and the other tries the next. The same order asked again gets the driver it
        holds (a redelivered command), or its earlier refusal is not remembered: it looks
        again."""
        held = await self.drivers.reservation(order_id)
        if held is not None:
            if held.state == "active":
                driver = await self.get(held.driver_id)
                return Reserved(driver.id, driver.user_id)
            return NotReserved(f"the order's reservation was already {held.state}")
        for _ in range(RESERVE_ROUNDS):
            candidates = await find_nearby(self.session, lat, lon, radius_km, RESERVE_CANDIDATES)
            if not candidates:
                break
            for candidate in candidates:
                driver = candidate.driver
                if await self.drivers.swap_status(driver, "available", "busy"):
                    self.session.add(Reservation(order_id=order_id, driver_id=driver.id))
                    await self.session.flush()
                    await self._status_changed(driver, "available", "busy")
                    return Reserved(driver.id, driver.user_id)
        return NotReserved(f"no available driver within {radius_km:g} km of the pickup")

    async def end_reservation(self, order_id: str,
                              outcome: Literal["released", "completed"]) -> Reservation | None:
        """Give the order's driver back (`busy` -> `available`): `released` when the order was
        cancelled or its saga compensated, `completed` when the trip is over. Ending one that
        has ended, or that never was, changes nothing (a redelivered command)."""
        held = await self.drivers.reservation(order_id)
        if held is None or held.state != "active":
            return held
        held.state = outcome
        driver = await self.get(held.driver_id)
        await self.session.flush()
        if await self.drivers.swap_status(driver, "busy", "available"):
            await self._status_changed(driver, "busy", "available")
        return held

    async def _status_changed(self, driver: Driver, old: str, new: str) -> None:
        await self.publish_event(DriverStatusChanged(
            aggregate_id=str(driver.id),
            data=DriverStatusChangedData(driver_id=str(driver.id), user_id=driver.user_id,
                                         old=old, new=new)))
