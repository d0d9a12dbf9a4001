"""The events the driver service publishes (`driver.events`, `driver.locations`); it consumes
its own `driver.location_reported`, which devices may also publish straight to Kafka, and the
ride saga's commands on `driver.commands` (reserve, release, complete), answering each
through its outbox to the topic the command names (`reply_to`)."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, Field

from core.messaging import DomainEvent, EventRegistry, IntegrationEvent

EVENTS_TOPIC = "driver.events"
LOCATIONS_TOPIC = "driver.locations"
COMMANDS_TOPIC = "driver.commands"


class DriverRegisteredData(BaseModel):
    driver_id: str
    user_id: str
    licence_number: str
    vehicle: dict[str, Any]


class DriverRegistered(DomainEvent[DriverRegisteredData]):
    EVENT_TYPE = "driver.registered"


class DriverStatusChangedData(BaseModel):
    driver_id: str
    user_id: str
    old: str
    new: str


class DriverStatusChanged(DomainEvent[DriverStatusChangedData]):
    EVENT_TYPE = "driver.status_changed"


class LocationReportedData(BaseModel):
    """Ranges are checked on decoding: a record out of range is poison (dead-lettered)."""

    driver_id: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    recorded_at: AwareDatetime


class DriverLocationReported(DomainEvent[LocationReportedData]):
    EVENT_TYPE = "driver.location_reported"


# -- the ride saga's commands and their replies (keyed and tagged by the saga id, which is the
# order id; the commands also carry it, as the reservation's key) --------------------------


class ReserveDriverData(BaseModel):
    order_id: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    radius_km: float = Field(gt=0, le=500)


class ReserveDriver(IntegrationEvent[ReserveDriverData]):
    """Hold the nearest available driver within `radius_km` of the pickup for the order."""

    EVENT_TYPE = "driver.reserve"


class OrderRef(BaseModel):
    order_id: str


class ReleaseDriver(IntegrationEvent[OrderRef]):
    """Give back the driver the order holds, if any (the saga's compensation, a cancel)."""

    EVENT_TYPE = "driver.release"


class CompleteTrip(IntegrationEvent[OrderRef]):
    """The order's trip is over: give its driver back."""

    EVENT_TYPE = "driver.complete"


class DriverReservedData(BaseModel):
    order_id: str
    driver_id: str
    user_id: str


class DriverReserved(IntegrationEvent[DriverReservedData]):
    EVENT_TYPE = "driver.reserved"


class NotReservedData(BaseModel):
    order_id: str
    reason: str


class DriverNotReserved(IntegrationEvent[NotReservedData]):
    EVENT_TYPE = "driver.not_reserved"


class ReservationEndedData(BaseModel):
    order_id: str
    outcome: str
    """`released` or `completed`; `none` when the order held no driver."""


class DriverReleased(IntegrationEvent[ReservationEndedData]):
    EVENT_TYPE = "driver.released"


class TripCompleted(IntegrationEvent[ReservationEndedData]):
    EVENT_TYPE = "driver.trip_completed"


def driver_events() -> EventRegistry:
    """The one registry the service decodes with."""
    registry = EventRegistry()
    for cls in (DriverRegistered, DriverStatusChanged, DriverLocationReported, ReserveDriver,
                ReleaseDriver, CompleteTrip, DriverReserved, DriverNotReserved, DriverReleased,
                TripCompleted):
        registry.register(cls)
    return registry
