"""Event factories shared by the tests: an order event in two versions, a quote request and
its reply, unique names."""

from __future__ import annotations

import uuid

from pydantic import BaseModel

from core.messaging.events import DomainEvent, IntegrationEvent
from core.messaging.serialization import EventRegistry


class OrderPlacedV1Data(BaseModel):
    order_id: str
    amount: int


class OrderPlacedData(BaseModel):
    order_id: str
    amount_cents: int
    currency: str
    seq: int = 0


class OrderPlacedV1(DomainEvent[OrderPlacedV1Data]):
    EVENT_TYPE = "order.placed"
    EVENT_VERSION = 1


class OrderPlaced(DomainEvent[OrderPlacedData]):
    EVENT_TYPE = "order.placed"
    EVENT_VERSION = 2


def order_registry() -> EventRegistry:
    """Knows OrderPlaced v2 and how to lift v1 (whole units, implied EUR) to it."""
    registry = EventRegistry()
    registry.register(OrderPlaced)

    @registry.upcaster("order.placed", from_version=1)
    def v1_to_v2(data: dict[str, object]) -> dict[str, object]:
        amount = data.pop("amount")
        assert isinstance(amount, int)
        return {**data, "amount_cents": amount * 100, "currency": "EUR"}

    return registry


def placed(order_id: str, seq: int = 0, amount_cents: int = 100) -> OrderPlaced:
    return OrderPlaced(
        aggregate_id=order_id,
        data=OrderPlacedData(order_id=order_id, amount_cents=amount_cents, currency="EUR",
                             seq=seq),
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class QuoteQuery(BaseModel):
    distance_km: float


class QuoteAnswer(BaseModel):
    price_cents: int


class GetQuote(IntegrationEvent[QuoteQuery]):
    EVENT_TYPE = "pricing.get_quote"


class Quote(IntegrationEvent[QuoteAnswer]):
    EVENT_TYPE = "pricing.quote"


def priced(request: GetQuote) -> Quote:
    return request.caused(Quote, QuoteAnswer(price_cents=int(request.data.distance_km * 150)))
