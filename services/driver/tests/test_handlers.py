"""What the location handler keeps (handlers.py): the latest-location read model and the nearby
query that reads it, on SQLite and the real PostgreSQL: the guarded upsert (later wins,
whatever the order), the geohash ranges (borders, the antimeridian, the poles) and the
coalescing writer the handler hands each report to, under the service's own migrations. The
handler fed from Kafka by the running service: test_http.py.

The ride saga's participant (reserve, release, complete on `driver.commands`) in the running
service: a command delivered twice has one effect and one reply (the inbox), each reply goes
to the command's `reply_to` with the saga's headers."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from core.db import Database
from core.messaging import BaseEvent, KafkaAdmin
from core.saga import H_SAGA_ID
from services.driver.events import (
    COMMANDS_TOPIC,
    CompleteTrip,
    OrderRef,
    ReleaseDriver,
    ReserveDriver,
    ReserveDriverData,
)
from services.driver.locations import Report, find_nearby, latest_location, record_location
from services.driver.models import Driver
from services.driver.tests.conftest import DriverStack
from services.driver.writer import LocationWriter
from tests.e2e.kafka_tools import Record, records
from tests.helpers import eventually, unique

pytestmark = pytest.mark.asyncio(loop_scope="session")
HEADER_REPLY_TO, HEADER_IN_REPLY_TO = "reply_to", "in_reply_to"
"""The wire headers of a saga command and its reply (the contract, as a participant sees it)."""
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


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


# -- the ride saga's participant, in the running service ------------------------------------


async def send(stack: DriverStack, command: BaseEvent[Any], order_id: str,
               reply_to: str) -> None:
    """The command as the orchestrator sends it: keyed and tagged by the saga (the order)."""
    if stack.bus is None:
        await stack.publish_location(str(uuid.uuid4()), 0, 0)  # starts the test's producer
    assert stack.bus is not None
    await KafkaAdmin(stack.kafka).create_topics([reply_to])  # the orchestrator's, normally
    await stack.bus.publish(COMMANDS_TOPIC, command, key=order_id, headers=[
        (H_SAGA_ID, order_id.encode()), (HEADER_REPLY_TO, reply_to.encode())])


async def replies(stack: DriverStack, topic: str, n: int) -> list[Record]:
    """The replies on `topic`, once there are `n`."""
    async def found() -> list[Record] | None:
        got = await records(stack.kafka.bootstrap_servers, topic, lambda r: True)
        return got if len(got) >= n else None

    result: list[Record] = await eventually(found, timeout=60, interval=0.3)
    return result


async def status_of(stack: DriverStack, driver_id: str) -> str:
    async with await stack.client("reader", ["drivers:read"]) as http:
        return str((await http.get(f"/drivers/{driver_id}")).json()["status"])


async def test_a_reserve_and_a_release_delivered_twice_each_act_and_answer_once(
        stack: DriverStack) -> None:
    user_id, driver_id = await stack.new_driver(status="available")
    lat, lon = random.uniform(-60, 60), random.uniform(-170, 170)
    async with await stack.client(user_id) as http:
        placed = await http.put(f"/drivers/{driver_id}/location", json={"lat": lat, "lon": lon})
        assert placed.status_code == 200, placed.text
    order_id, reply_to = str(uuid.uuid4()), unique("order.saga-replies")
    reserve = ReserveDriver(data=ReserveDriverData(order_id=order_id, lat=lat, lon=lon,
                                                   radius_km=5))
    await send(stack, reserve, order_id, reply_to)
    await send(stack, reserve, order_id, reply_to)  # the same event again: a redelivery
    (reserved,) = await replies(stack, reply_to, 1)
    assert reserved.envelope["event_type"] == "driver.reserved"
    assert reserved.envelope["data"] == {"order_id": order_id, "driver_id": driver_id,
                                         "user_id": user_id}
    assert dict(reserved.headers)[H_SAGA_ID] == order_id.encode()
    assert dict(reserved.headers)[HEADER_IN_REPLY_TO] == str(reserve.event_id).encode()
    assert reserved.key == order_id.encode()
    assert await status_of(stack, driver_id) == "busy"

    release = ReleaseDriver(data=OrderRef(order_id=order_id))
    await send(stack, release, order_id, reply_to)
    await send(stack, release, order_id, reply_to)
    # A distinct last command on the same key: once its reply is in, every earlier command
    # was handled (one partition, in order), so the count below is final.
    marker = ReleaseDriver(data=OrderRef(order_id=order_id))
    await send(stack, marker, order_id, reply_to)
    answers = await replies(stack, reply_to, 3)
    assert [r.envelope["event_type"] for r in answers] == ["driver.reserved",
                                                           "driver.released", "driver.released"]
    assert [dict(r.headers)[HEADER_IN_REPLY_TO] for r in answers[1:]] == [
        str(release.event_id).encode(), str(marker.event_id).encode()]
    assert await status_of(stack, driver_id) == "available"


async def test_a_refused_reserve_answers_with_the_reason_and_complete_frees_the_driver(
        stack: DriverStack) -> None:
    lat, lon = random.uniform(-60, 60), random.uniform(-170, 170)
    lonely, reply_to = str(uuid.uuid4()), unique("order.saga-replies")
    await send(stack, ReserveDriver(data=ReserveDriverData(order_id=lonely, lat=lat, lon=lon,
                                                           radius_km=1)), lonely, reply_to)
    (refused,) = await replies(stack, reply_to, 1)
    assert refused.envelope["event_type"] == "driver.not_reserved"
    assert "no available driver within 1 km" in refused.envelope["data"]["reason"]

    user_id, driver_id = await stack.new_driver(status="available")
    async with await stack.client(user_id) as http:
        await http.put(f"/drivers/{driver_id}/location", json={"lat": lat, "lon": lon})
    order_id = str(uuid.uuid4())
    await send(stack, ReserveDriver(data=ReserveDriverData(order_id=order_id, lat=lat,
                                                           lon=lon, radius_km=1)),
               order_id, reply_to)
    await replies(stack, reply_to, 2)
    assert await status_of(stack, driver_id) == "busy"
    await send(stack, CompleteTrip(data=OrderRef(order_id=order_id)), order_id, reply_to)
    assert await eventually(lambda: _is(stack, driver_id, "available"), timeout=30)


async def _is(stack: DriverStack, driver_id: str, status: str) -> bool:
    return await status_of(stack, driver_id) == status
