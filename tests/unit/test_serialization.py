import json

import pytest

from core.messaging.exceptions import MalformedEventError, UnknownEventError
from core.messaging.serialization import EventSerializer
from tests.support import OrderPlaced, OrderPlacedV1, OrderPlacedV1Data, order_registry, placed


def test_round_trip_keeps_every_field() -> None:
    serializer = EventSerializer(order_registry())
    event = placed("o-1", seq=7).model_copy(update={"correlation_id": "c-1"})
    value, headers = serializer.serialize(event)
    assert dict(headers)["event_type"] == b"order.placed"
    assert dict(headers)["correlation_id"] == b"c-1"
    decoded = serializer.deserialize(value, headers)
    assert decoded == event
    assert isinstance(decoded, OrderPlaced)


def test_body_alone_is_enough_without_headers() -> None:
    serializer = EventSerializer(order_registry())
    event = placed("o-2")
    value, _ = serializer.serialize(event)
    assert serializer.deserialize(value, []) == event


def test_old_version_is_upcast_to_newest() -> None:
    registry = order_registry()
    old = OrderPlacedV1(aggregate_id="o-3", data=OrderPlacedV1Data(order_id="o-3", amount=12))
    # An old producer knew only v1:
    value, headers = EventSerializer(_registry_with(OrderPlacedV1)).serialize(old)
    decoded = EventSerializer(registry).deserialize(value, headers)
    assert isinstance(decoded, OrderPlaced)
    assert decoded.data.amount_cents == 1200 and decoded.data.currency == "EUR"
    assert decoded.event_id == old.event_id


def _registry_with(cls: type) -> object:
    from core.messaging.serialization import EventRegistry

    registry = EventRegistry()
    registry.register(cls)  # type: ignore[arg-type]
    return registry


@pytest.mark.parametrize(
    ("value", "headers", "error", "reason"),
    [
        (b"", [], MalformedEventError, "no value"),
        (b"not json", [], MalformedEventError, "not JSON"),
        (b"[1, 2]", [], MalformedEventError, "not a JSON object"),
        (b"{}", [], MalformedEventError, "event_type"),
        (json.dumps({"event_type": "order.placed", "event_version": "x"}).encode(), [],
         MalformedEventError, "not an integer"),
        (json.dumps({"event_type": "nope", "event_version": 1}).encode(), [],
         UnknownEventError, "unknown event type"),
        (json.dumps({"event_type": "order.placed", "event_version": 3}).encode(), [],
         UnknownEventError, "newer"),
        (json.dumps({"event_type": "order.placed", "event_version": 2, "data": {}}).encode(),
         [], MalformedEventError, "data.order_id"),
    ],
)
def test_poison_records_raise_clear_errors(value: bytes, headers: list, error: type,
                                           reason: str) -> None:
    with pytest.raises(error, match=reason):
        EventSerializer(order_registry()).deserialize(value, headers)


def test_missing_upcaster_is_unknown() -> None:
    registry = _registry_with(OrderPlaced)
    body = {"event_type": "order.placed", "event_version": 1, "aggregate_id": "a",
            "data": {"order_id": "a", "amount": 1}}
    with pytest.raises(UnknownEventError, match="no upcaster"):
        EventSerializer(registry).deserialize(json.dumps(body).encode())  # type: ignore[arg-type]


def test_registering_two_classes_for_one_version_fails() -> None:
    registry = order_registry()

    class Impostor(OrderPlaced):
        pass

    with pytest.raises(ValueError, match="already registered"):
        registry.register(Impostor)


def test_cached_class_is_dropped_when_a_newer_version_is_registered() -> None:
    from core.messaging.serialization import EventRegistry

    registry = EventRegistry()
    registry.register(OrderPlacedV1)
    serializer = EventSerializer(registry)
    old = OrderPlacedV1(aggregate_id="o", data=OrderPlacedV1Data(order_id="o", amount=2))
    value, headers = serializer.serialize(old)
    assert isinstance(serializer.deserialize(value, headers), OrderPlacedV1)  # now cached
    registry.register(OrderPlaced)
    registry.upcaster("order.placed", 1)(
        lambda d: {"order_id": d["order_id"], "amount_cents": d["amount"] * 100,
                   "currency": "EUR"})
    upcast = serializer.deserialize(value, headers)
    assert isinstance(upcast, OrderPlaced) and upcast.data.amount_cents == 200
