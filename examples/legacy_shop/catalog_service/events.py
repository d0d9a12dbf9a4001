"""What the catalog publishes: `catalog.product_changed` on `catalog.events`, keyed by the
product id (one product's changes stay in order), carrying the whole product so a consumer
(the shop's orders, later an order service) keeps its own copy of the prices it needs."""

from __future__ import annotations

from pydantic import BaseModel

from core.messaging import DomainEvent, EventRegistry

CATALOG_EVENTS = "catalog.events"


class ProductChangedData(BaseModel):
    product_id: int
    sku: str
    name: str
    price_cents: int
    source: str
    """"api" (written through the catalog service) or "backfill" (copied from the shop)."""


class ProductChanged(DomainEvent[ProductChangedData]):
    EVENT_TYPE = "catalog.product_changed"


events = EventRegistry()
events.register(ProductChanged)
