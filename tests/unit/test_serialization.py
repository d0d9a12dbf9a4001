import json

import pytest

from core.messaging.errors import (
    MalformedEventError,
    UnknownEventError,
    UnknownEventTypeError,
)
from core.messaging.serialization import (
    Envelope,
    EventSerializer,
    envelope_headers,
    event_type_of,
)
from tests.helpers import OrderPlaced, OrderPlacedV1, OrderPlacedV1Data, order_registry, placed


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
        (b"", [], MalformedEventError, "^record has no value$"),
        (b"not json", [], MalformedEventError, "not JSON"),
        (b"[1, 2]", [], MalformedEventError, "^record value is not a JSON object$"),
        (b"{}", [], MalformedEventError, "^record does not name an event_type$"),
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
    with pytest.raises(UnknownEventError, match=r"no upcaster for order\.placed v1 -> v2"):
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


def test_headers_alone_name_type_and_version() -> None:
    # A producer that keeps type and version only in headers: the body need not repeat them.
    old = OrderPlacedV1(aggregate_id="o-4", data=OrderPlacedV1Data(order_id="o-4", amount=5))
    _, headers = EventSerializer(_registry_with(OrderPlacedV1)).serialize(old)
    body = old.model_dump(mode="json", exclude={"event_type", "event_version"})
    decoded = EventSerializer(order_registry()).deserialize(json.dumps(body).encode(), headers)
    assert isinstance(decoded, OrderPlaced) and decoded.data.amount_cents == 500


def test_headers_win_over_the_body() -> None:
    event = placed("o-5")
    value, headers = EventSerializer(order_registry()).serialize(event)
    body = {**json.loads(value), "event_type": "someone.else", "event_version": "x"}
    assert EventSerializer(order_registry()).deserialize(json.dumps(body).encode(),
                                                         headers) == event


def test_a_null_header_is_as_good_as_absent() -> None:
    event = placed("o-6")
    value, headers = EventSerializer(order_registry()).serialize(event)
    nulls = [("event_type", None), ("event_version", None), *headers[2:]]
    assert EventSerializer(order_registry()).deserialize(value, nulls) == event  # type: ignore[arg-type]
    bare = json.dumps(event.model_dump(mode="json", exclude={"event_type", "event_version"}))
    later = [("traceparent", None), *headers]  # the type headers come after a null one
    assert EventSerializer(order_registry()).deserialize(bare.encode(), later) == event  # type: ignore[arg-type]


def test_a_type_header_without_a_version_takes_the_version_from_the_body() -> None:
    event = placed("o-6")
    value, _ = EventSerializer(order_registry()).serialize(event)
    assert EventSerializer(order_registry()).deserialize(
        value, [("event_type", b"order.placed")]) == event


def test_undecodable_header_bytes_name_an_unknown_type_or_a_bad_version() -> None:
    serializer = EventSerializer(order_registry())
    value, _ = serializer.serialize(placed("o-7"))
    with pytest.raises(UnknownEventTypeError):
        serializer.deserialize(value, [("event_type", b"\xffbilling"), ("event_version", b"1")])
    with pytest.raises(MalformedEventError, match="not an integer"):
        serializer.deserialize(value, [("event_type", b"order.placed"), ("event_version", b"\xff")])


def test_an_empty_event_type_is_malformed() -> None:
    body = json.dumps({"event_type": "", "event_version": 2}).encode()
    with pytest.raises(MalformedEventError, match="does not name an event_type"):
        EventSerializer(order_registry()).deserialize(body, [])


def test_invalid_payload_is_named_on_the_cached_path_too() -> None:
    serializer = EventSerializer(order_registry())
    value, headers = serializer.serialize(placed("o-8"))
    serializer.deserialize(value, headers)  # the headers now map straight to the class
    broken = json.dumps({**json.loads(value), "data": {}}).encode()
    with pytest.raises(MalformedEventError, match=r"order.placed v2: data.order_id"):
        serializer.deserialize(broken, headers)


def test_headers_carry_the_ids() -> None:
    event = placed("o-9").model_copy(update={"causation_id": "e-0"})
    _, headers = EventSerializer(order_registry()).serialize(event)
    assert dict(headers)["event_id"] == str(event.event_id).encode()
    assert dict(headers)["causation_id"] == b"e-0"


def test_a_newer_class_registered_later_is_noticed() -> None:
    from core.messaging.serialization import EventRegistry

    registry = EventRegistry()
    registry.upcaster("order.placed", 1)(
        lambda d: {"order_id": d["order_id"], "amount_cents": d["amount"] * 100,
                   "currency": "EUR"})
    registry.register(OrderPlacedV1)
    serializer = EventSerializer(registry)
    value, headers = serializer.serialize(
        OrderPlacedV1(aggregate_id="o", data=OrderPlacedV1Data(order_id="o", amount=2)))
    assert isinstance(serializer.deserialize(value, headers), OrderPlacedV1)  # now cached
    registry.register(OrderPlaced)
    assert isinstance(serializer.deserialize(value, headers), OrderPlaced)


def test_an_event_class_without_a_type_is_refused() -> None:
    from core.messaging.serialization import EventRegistry

    class Nameless(OrderPlaced):
        EVENT_TYPE = ""

    with pytest.raises(TypeError, match="Nameless has no EVENT_TYPE"):
        EventRegistry().register(Nameless)


def test_a_validation_error_names_its_first_three_failures_joined_by_semicolons() -> None:
    body = {"event_type": "order.placed", "event_version": 2, "aggregate_id": "a",
            "data": {"seq": "x"}}  # order_id, amount_cents, currency missing; seq not a number
    with pytest.raises(MalformedEventError) as failed:
        EventSerializer(order_registry()).deserialize(json.dumps(body).encode())
    reasons = str(failed.value).split(": ", 1)[1].split("; ")
    assert len(reasons) == 3 and all(r.startswith("data.") for r in reasons), str(failed.value)


def test_an_unexpected_failure_while_decoding_is_malformed_naming_its_error() -> None:
    value, _ = EventSerializer(order_registry()).serialize(placed("a"))
    with pytest.raises(MalformedEventError) as failed:
        EventSerializer(order_registry()).deserialize(value, [("event_type", 7)])  # type: ignore[list-item]
    assert str(failed.value) == ("cannot decode: AttributeError: 'int' object has no "
                                 "attribute 'decode'")


def test_the_envelope_headers_in_one_pass() -> None:
    headers = [("event_type", b"first"), ("event_id", b"id-1"), ("event_version", b"1"),
               ("x", b"y"), ("event_type", b"last"), ("event_version", b"2"),
               ("event_id", b"id-2")]
    assert envelope_headers(headers) == Envelope(b"first", b"last", b"2", b"id-1")
    assert envelope_headers([]) == Envelope(None, None, None, None)
    assert event_type_of(headers) == b"first" and event_type_of([("x", b"y")]) is None
