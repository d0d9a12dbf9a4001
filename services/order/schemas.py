"""What clients send and receive; separate from the stored events and read models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from services.order.events import Point
from services.order.rules import Status


class PointIn(Point):
    model_config = ConfigDict(extra="forbid")


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pickup: PointIn
    dropoff: PointIn


class HistoryEntry(BaseModel):
    status: Status
    at: datetime
    reason: str | None = None


class OrderPublic(BaseModel):
    id: str
    status: Status
    passenger_id: str
    pickup: Point
    dropoff: Point
    driver_id: str | None = None
    reason: str | None = None
    history: list[HistoryEntry] = []


class OrderSummary(BaseModel):
    """One row of a read model: the caller's orders, or the caller's trips as a driver."""

    id: str
    status: Status
    driver_id: str | None = None
    reason: str | None = None
    updated_at: datetime


class OrderList(BaseModel):
    data: list[OrderSummary]


class StoredEvent(BaseModel):
    position: int
    event_type: str
    event_id: str
    data: dict[str, Any]
    recorded_at: datetime


class EventList(BaseModel):
    data: list[StoredEvent]
