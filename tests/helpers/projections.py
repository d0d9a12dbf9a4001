"""A ride read model for the projection tests, in the shape the order service's will have:
the ride history per passenger and the trips per driver, two projections over one topic.

Both count what they apply (`events`, `trips`, `earned_cents` grow with each event), so an
event applied twice, or missed, shows in the rows. `refused` passengers make the history's
apply raise (a poison event); `crash_after` kills the process right after the trips
projection applied that ride's completion, before its transaction commits."""

from __future__ import annotations

import os
import signal
from typing import Any

from pydantic import BaseModel
from sqlalchemy import BigInteger, Column, Integer, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db.models import service_metadata
from core.messaging import messaging_tables
from core.messaging.events import DomainEvent
from core.messaging.kafka_client import KafkaProducer
from core.messaging.serialization import EventRegistry, EventSerializer
from core.projections import Projection, View, positions_table

REFUSED = "refused"

metadata = service_metadata()
messaging_tables(metadata, inbox=False)  # a whole service's metadata, for create_service
positions = positions_table(metadata)
ride_history = Table(
    "ride_history", metadata,
    Column("ride_id", String(64), primary_key=True),
    Column("passenger_id", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("driver_id", String(64)),
    Column("events", Integer, nullable=False),
)
driver_trips = Table(
    "driver_trips", metadata,
    Column("driver_id", String(64), primary_key=True),
    Column("trips", Integer, nullable=False),
    Column("earned_cents", BigInteger, nullable=False),
)


class Requested(BaseModel):
    ride_id: str
    passenger_id: str


class Completed(BaseModel):
    ride_id: str
    driver_id: str
    fare_cents: int


class Rated(BaseModel):
    ride_id: str
    stars: int


class RideRequested(DomainEvent[Requested]):
    EVENT_TYPE = "ride.requested"


class RideCompleted(DomainEvent[Completed]):
    EVENT_TYPE = "ride.completed"


class RideRated(DomainEvent[Rated]):
    """No projection applies it: skipped."""

    EVENT_TYPE = "ride.rated"


def requested(ride: str, passenger: str) -> RideRequested:
    return RideRequested(aggregate_id=ride, data=Requested(ride_id=ride, passenger_id=passenger))


def completed(ride: str, driver: str, fare: int = 1000) -> RideCompleted:
    return RideCompleted(aggregate_id=ride,
                         data=Completed(ride_id=ride, driver_id=driver, fare_cents=fare))


def rated(ride: str) -> RideRated:
    return RideRated(aggregate_id=ride, data=Rated(ride_id=ride, stars=5))


def ride_projections(topic: str, *, crash_after: str | None = None) -> tuple[Projection,
                                                                             Projection]:
    """The history per passenger and the trips per driver, reading `topic`."""
    history = Projection("ride_history", topics=[topic], tables=[ride_history])
    trips = Projection("driver_trips", topics=[topic], tables=[driver_trips])

    @history.applies(RideRequested)
    async def ride_requested(event: RideRequested, view: View) -> None:
        rows = view.table(ride_history)
        await view.session.execute(insert(rows).values(
            ride_id=event.data.ride_id, passenger_id=event.data.passenger_id,
            status="requested", events=1))
        if event.data.passenger_id == REFUSED:
            raise ValueError("refused passenger")

    @history.applies(RideCompleted)
    async def ride_completed(event: RideCompleted, view: View) -> None:
        rows = view.table(ride_history)
        await view.session.execute(
            update(rows).where(rows.c.ride_id == event.data.ride_id)
            .values(status="completed", driver_id=event.data.driver_id,
                    events=rows.c.events + 1))

    @trips.applies(RideCompleted)
    async def trip_done(event: RideCompleted, view: View) -> None:
        rows = view.table(driver_trips)
        found = await view.session.scalar(
            select(rows.c.trips).where(rows.c.driver_id == event.data.driver_id))
        if found is None:
            await view.session.execute(insert(rows).values(
                driver_id=event.data.driver_id, trips=1, earned_cents=event.data.fare_cents))
        else:
            await view.session.execute(
                update(rows).where(rows.c.driver_id == event.data.driver_id)
                .values(trips=rows.c.trips + 1,
                        earned_cents=rows.c.earned_cents + event.data.fare_cents))
        if event.data.ride_id == crash_after:
            await view.session.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # applied, not committed

    return history, trips


def producer_registry() -> EventRegistry:
    registry = EventRegistry()
    for cls in (RideRequested, RideCompleted, RideRated):
        registry.register(cls)
    return registry


async def publish(producer: KafkaProducer, topic: str, events: list[Any]) -> None:
    """Produce `events` keyed by their ride, in order, each acknowledged."""
    serializer = EventSerializer(producer_registry())
    for event in events:
        value, headers = serializer.serialize(event)
        await producer.produce(topic, value, event.aggregate_id, headers)


def rides(prefix: str, count: int, *, drivers: int = 5) -> list[Any]:
    """`count` rides, each requested then completed (by one of `drivers` drivers)."""
    events: list[Any] = []
    for i in range(count):
        ride = f"{prefix}-{i}"
        events += [requested(ride, f"p-{i % 7}"), completed(ride, f"d-{i % drivers}", 100 + i)]
    return events


async def create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


async def contents(engine: AsyncEngine, table: Table) -> list[tuple[Any, ...]]:
    """Every row of `table`, in key order."""
    async with engine.connect() as conn:
        result = await conn.execute(select(table).order_by(*table.primary_key.columns))
        return [tuple(row) for row in result]
