"""The order's events (`order.events`, the aggregate's stream published through the outbox),
and this service's copies of the driver service's saga commands and replies
(`driver.commands`, answered on `order.saga-replies`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.messaging import DomainEvent, EventRegistry, IntegrationEvent

ORDER_EVENTS = "order.events"
SAGA_REPLIES = "order.saga-replies"
DRIVER_COMMANDS = "driver.commands"


class Point(BaseModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class OrderPlacedData(BaseModel):
    order_id: str
    passenger_id: str
    pickup: Point
    dropoff: Point


class OrderChangeData(BaseModel):
    """What every later event of an order carries: enough for a read model to keep a row
    per passenger and per driver without reading the stream."""

    order_id: str
    passenger_id: str
    driver_id: str | None = None
    driver_user_id: str | None = None
    reason: str | None = None


class OrderPlaced(DomainEvent[OrderPlacedData]):
    EVENT_TYPE = "order.placed"


class OrderDriverReserved(DomainEvent[OrderChangeData]):
    EVENT_TYPE = "order.driver_reserved"


class OrderConfirmed(DomainEvent[OrderChangeData]):
    EVENT_TYPE = "order.confirmed"


class OrderRejected(DomainEvent[OrderChangeData]):
    EVENT_TYPE = "order.rejected"


class OrderCancelled(DomainEvent[OrderChangeData]):
    EVENT_TYPE = "order.cancelled"


class OrderCompleted(DomainEvent[OrderChangeData]):
    EVENT_TYPE = "order.completed"


ORDER_EVENT_TYPES: tuple[type[DomainEvent[OrderChangeData]] | type[OrderPlaced], ...] = (
    OrderPlaced, OrderDriverReserved, OrderConfirmed, OrderRejected, OrderCancelled,
    OrderCompleted)


# -- the driver service's saga commands and replies (consumer-side copies) -------------------


class ReserveDriverData(BaseModel):
    """The driver service's bounds, kept here too: a command out of them would be poison to
    it (dead-lettered, the step left to time out), so it is refused where it is built."""

    order_id: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    radius_km: float = Field(gt=0, le=500)


class ReserveDriver(IntegrationEvent[ReserveDriverData]):
    EVENT_TYPE = "driver.reserve"


class OrderRef(BaseModel):
    order_id: str


class ReleaseDriver(IntegrationEvent[OrderRef]):
    EVENT_TYPE = "driver.release"


class CompleteTrip(IntegrationEvent[OrderRef]):
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


class DriverReleased(IntegrationEvent[ReservationEndedData]):
    EVENT_TYPE = "driver.released"


def order_events() -> EventRegistry:
    """The one registry the service decodes with (its stream, the saga's replies)."""
    registry = EventRegistry()
    for cls in (*ORDER_EVENT_TYPES, ReserveDriver, ReleaseDriver, CompleteTrip,
                DriverReserved, DriverNotReserved, DriverReleased):
        registry.register(cls)
    return registry
