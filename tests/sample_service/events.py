"""The sample service's domain events."""

from __future__ import annotations

from pydantic import BaseModel

from core.messaging.events import DomainEvent


class WidgetData(BaseModel):
    widget_id: str
    sku: str
    price_cents: int


class WidgetCreated(DomainEvent[WidgetData]):
    EVENT_TYPE = "widget.created"


class WidgetDeleted(DomainEvent[WidgetData]):
    EVENT_TYPE = "widget.deleted"
