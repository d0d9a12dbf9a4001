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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.driver.geo import cell_ranges, covering_cells, encode, haversine_km
from services.driver.models import Driver, DriverLocation


async def record_location(session: AsyncSession, driver_id: uuid.UUID, lat: float, lon: float,
                          recorded_at: datetime) -> bool:
    """Store the report unless a later (or the same) one is stored; whether it was stored.
    The driver must exist (the row refers to it)."""
    insert: Any = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(DriverLocation).values(
        driver_id=driver_id, lat=lat, lon=lon, cell=encode(lat, lon), recorded_at=recorded_at)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[DriverLocation.driver_id],
        set_={"lat": excluded.lat, "lon": excluded.lon, "cell": excluded.cell,
              "recorded_at": excluded.recorded_at},
        where=excluded.recorded_at > DriverLocation.recorded_at,
    )
    result = await session.execute(statement)
    return bool(getattr(result, "rowcount", 0))


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
