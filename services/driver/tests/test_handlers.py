"""What the location handler keeps (handlers.py): the latest-location read model and the nearby
query that reads it, on SQLite and the real PostgreSQL: the guarded upsert (later wins,
whatever the order), the geohash ranges (borders, the antimeridian, the poles) and the
coalescing writer the handler hands each report to, under the service's own migrations. The
handler fed from Kafka by the running service: test_http.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import text

from core.db import Database, migrations
from services.driver.locations import Report, find_nearby, latest_location, record_location
from services.driver.main import SERVICE_DIR
from services.driver.models import Driver
from services.driver.writer import LocationWriter
from tests.integration.databases import BACKENDS, open_databases

pytestmark = pytest.mark.asyncio(loop_scope="session")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=BACKENDS)
async def database(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    async with open_databases(request, tmp_path_factory.mktemp("read-model")) as factory:
        db = Database(await factory.new())
        await migrations.upgrade(SERVICE_DIR, db)
        yield db
        await db.dispose()


async def new_driver(database: Database, status: str = "available") -> uuid.UUID:
    async with database.transaction() as session:
        driver = Driver(user_id=str(uuid.uuid4()), licence_number=uuid.uuid4().hex[:20].upper(),
                        licence_expiry=date(2030, 1, 1), vehicle_make="Kia",
                        vehicle_model="Niro", vehicle_plate="K 1", vehicle_colour="blue",
                        vehicle_year=2021, status=status)
        session.add(driver)
    return driver.id


async def place(database: Database, driver_id: uuid.UUID, lat: float, lon: float,
                at: datetime = NOW) -> bool:
    async with database.transaction() as session:
        return await record_location(session, driver_id, lat, lon, at)


async def test_a_later_report_wins_whatever_the_order(database: Database) -> None:
    driver_id = await new_driver(database)
    assert await place(database, driver_id, 1, 1, NOW)
    assert not await place(database, driver_id, 2, 2, NOW - timedelta(microseconds=1))
    assert not await place(database, driver_id, 3, 3, NOW)  # the same moment: a repeat
    assert await place(database, driver_id, 4, 4, NOW + timedelta(seconds=1))
    assert not await place(database, driver_id, 5, 5, NOW + timedelta(milliseconds=999))
    async with database.session() as session:
        stored = await latest_location(session, driver_id)
        assert stored is not None
        assert (stored.lat, stored.lon, stored.recorded_at) == (4, 4, NOW + timedelta(seconds=1))
        rows = await session.scalar(text("SELECT count(*) FROM driver_locations "
                                         "WHERE driver_id = :d"),
                                    {"d": driver_id.hex if database.dialect == "sqlite"
                                     else driver_id})
        assert rows == 1


async def nearby_ids(database: Database, lat: float, lon: float, radius_km: float,
                     limit: int = 50) -> list[uuid.UUID]:
    async with database.session() as session:
        return [n.driver.id for n in await find_nearby(session, lat, lon, radius_km, limit)]


async def test_nearby_is_nearest_first_and_only_the_available(database: Database) -> None:
    lat, lon = 35.6762, 139.6503
    ids = [await new_driver(database) for _ in range(4)]
    busy = await new_driver(database, "busy")
    for n, driver_id in enumerate(ids):  # 0, 0.9, 1.8, 2.7 km east-ish; the last out of range
        await place(database, driver_id, lat, lon + n * 0.01)
    await place(database, busy, lat, lon + 0.001)
    found = await nearby_ids(database, lat, lon, 2.5)
    assert found == ids[:3]
    assert await nearby_ids(database, lat, lon, 2.5, limit=2) == ids[:2]


@pytest.mark.parametrize(("rider", "driver", "radius_km"), [
    ((45.00001, 7.0), (44.99999, 7.0), 0.01),           # across latitude 45: a border of cells
    ((0.00001, 0.00001), (-0.00001, -0.00001), 0.01),  # where the four top-level cells meet
    ((-16.5, 179.9999), (-16.5, -179.9999), 0.1),      # across the antimeridian
    ((89.999, 0.0), (89.999, 180.0), 0.5),             # over the north pole
    ((-90.0, 0.0), (-89.9999, 77.0), 0.05),            # at the south pole itself
])
async def test_nearby_sees_across_borders(database: Database, rider: tuple[float, float],
                                          driver: tuple[float, float], radius_km: float) -> None:
    driver_id = await new_driver(database)
    await place(database, driver_id, *driver)
    assert driver_id in await nearby_ids(database, *rider, radius_km)


async def test_the_nearby_query_reads_the_cell_index(database: Database) -> None:
    """The candidates come from an index range scan on `cell`, not a scan of every driver.
    PostgreSQL's planner scans a table this small whatever its indexes, so it is told to
    avoid sequential scans: the plan then shows whether the index can serve the ranges."""
    where = ("WHERE (cell >= 'xn76' AND cell < 'xn77') OR (cell >= 'xn7d' AND cell < 'xn7e')")
    async with database.session() as session:
        if database.dialect == "sqlite":
            plan = await session.execute(text(
                f"EXPLAIN QUERY PLAN SELECT * FROM driver_locations {where}"))
        else:
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = await session.execute(text(f"EXPLAIN SELECT * FROM driver_locations {where}"))
        assert "ix_driver_locations_cell" in " ".join(str(row) for row in plan)


# --- the coalescing writer -----------------------------------------------------------------

@pytest.mark.parametrize("newer_first", [False, True])
async def test_the_writer_answers_each_report_for_itself(database: Database,
                                                         newer_first: bool) -> None:
    """Two reports of one driver in one batch: only the newer is applied, in either order;
    a repeat of it is not; another driver's report in the batch is its own."""
    driver_id, other = await new_driver(database), await new_driver(database)
    writer = LocationWriter(database)
    older = Report(driver_id, 1, 1, NOW)
    newer = Report(driver_id, 2, 2, NOW + timedelta(seconds=1))
    pair = [newer, older] if newer_first else [older, newer]
    reports = [*pair, Report(driver_id, 2, 2, NOW + timedelta(seconds=1)),
               Report(other, 3, 3, NOW), Report(uuid.uuid4(), 4, 4, NOW)]

    answers = dict(zip(map(id, reports), await asyncio.gather(
        *(writer.write(r) for r in reports)), strict=True))

    assert [answers[id(r)] for r in (older, newer)] == [False, True]
    assert [answers[id(r)] for r in reports[2:]] == [False, True, False]
    async with database.session() as session:
        stored = await latest_location(session, driver_id)
    assert stored is not None and (stored.lat, stored.recorded_at) == (2, newer.recorded_at)
