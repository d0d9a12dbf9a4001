"""The latest-location read model: one row per driver, written by the HTTP path and by the
consumer of `driver.locations`, read by the nearby query.

Both writers go through `record_location`, one guarded upsert: a report replaces the stored
row only when its `recorded_at` is later, so reports arriving out of order (a device's
buffered fixes, a redelivered record, the two paths racing) never move a driver back, and the
same report applied twice changes nothing. That makes the write idempotent without an inbox
row per location (see handlers.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.driver.geo import cell_ranges, covering_cells, encode, haversine_km
from services.driver.models import Driver, DriverLocation


@dataclass(frozen=True, slots=True)
class Report:
    """One location of one driver, as a device took it."""

    driver_id: uuid.UUID
    lat: float
    lon: float
    recorded_at: datetime


async def record_locations(session: AsyncSession, reports: Sequence[Report]) -> set[uuid.UUID]:
    """Store each driver's latest report of `reports` unless a later (or the same) one is
    stored, in one statement; the drivers whose row changed. The drivers must exist (the rows
    refer to them)."""
    latest: dict[uuid.UUID, Report] = {}
    for report in reports:
        known = latest.get(report.driver_id)
        if known is None or report.recorded_at > known.recorded_at:
            latest[report.driver_id] = report
    if not latest:
        return set()
    insert: Any = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(DriverLocation).values([
        {"driver_id": r.driver_id, "lat": r.lat, "lon": r.lon, "cell": encode(r.lat, r.lon),
         "recorded_at": r.recorded_at} for r in latest.values()])
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[DriverLocation.driver_id],
        set_={"lat": excluded.lat, "lon": excluded.lon, "cell": excluded.cell,
              "recorded_at": excluded.recorded_at},
        where=excluded.recorded_at > DriverLocation.recorded_at,
    ).returning(DriverLocation.driver_id)
    return set((await session.execute(statement)).scalars())


async def record_location(session: AsyncSession, driver_id: uuid.UUID, lat: float, lon: float,
                          recorded_at: datetime) -> bool:
    """`record_locations` of one report: whether it was stored."""
    return driver_id in await record_locations(session, [Report(driver_id, lat, lon,
                                                                recorded_at)])


async def latest_location(session: AsyncSession, driver_id: uuid.UUID) -> DriverLocation | None:
    return await session.get(DriverLocation, driver_id)


@dataclass(frozen=True, slots=True)
class Nearby:
    driver: Driver
    location: DriverLocation
    distance_km: float


async def find_nearby(session: AsyncSession, lat: float, lon: float, radius_km: float,
                      limit: int) -> list[Nearby]:
    """Available drivers within `radius_km` of (lat, lon), nearest first (ties by id).

    Reads only the rows whose cell lies in the geohash ranges covering the circle (an index
    range scan on `cell`), then keeps those truly within the radius by haversine distance: the
    candidates are the drivers of a few cells around the point, never every driver.
    """
    conditions: list[ColumnElement[bool]] = [
        and_(DriverLocation.cell >= low, DriverLocation.cell < high) if high is not None
        else DriverLocation.cell >= low
        for low, high in cell_ranges(covering_cells(lat, lon, radius_km))
    ]
    rows = await session.execute(
        select(Driver, DriverLocation)
        .join(DriverLocation, DriverLocation.driver_id == Driver.id)
        .where(or_(*conditions), Driver.status == "available"))
    found = []
    for driver, location in rows:
        distance = haversine_km(lat, lon, location.lat, location.lon)
        if distance <= radius_km:
            found.append(Nearby(driver, location, distance))
    found.sort(key=lambda n: (n.distance_km, str(n.driver.id)))
    return found[:limit]
