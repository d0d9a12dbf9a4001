"""The events the driver service publishes (`driver.events`, `driver.locations`); it consumes
its own `driver.location_reported`, which devices may also publish straight to Kafka."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, Field

from core.messaging import DomainEvent, EventRegistry

EVENTS_TOPIC = "driver.events"
LOCATIONS_TOPIC = "driver.locations"


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


def driver_events() -> EventRegistry:
    """The one registry the service decodes with."""
    registry = EventRegistry()
    for cls in (DriverRegistered, DriverStatusChanged, DriverLocationReported):
        registry.register(cls)
    return registry
