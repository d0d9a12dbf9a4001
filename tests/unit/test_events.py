import pytest
from pydantic import ValidationError

from tests.helpers import OrderPlaced, placed


def test_type_and_version_come_from_the_class() -> None:
    event = placed("o-1")
    assert (event.event_type, event.event_version) == ("order.placed", 2)
    dumped = event.model_dump()
    assert dumped["event_type"] == "order.placed" and dumped["event_version"] == 2


def test_domain_event_is_keyed_by_aggregate() -> None:
    assert placed("o-9").partition_key() == "o-9"


def test_events_are_immutable() -> None:
    event = placed("o-1")
    with pytest.raises(ValidationError):
        event.aggregate_id = "other"  # type: ignore[misc]


def test_caused_event_carries_correlation_and_cause() -> None:
    first = placed("o-1").model_copy(update={"correlation_id": "req-1"})
    second = first.caused(OrderPlaced, first.data, aggregate_id="o-1")
    assert second.correlation_id == "req-1"
    assert second.causation_id == str(first.event_id)
    assert second.event_id != first.event_id


def test_payload_is_validated() -> None:
    with pytest.raises(ValidationError):
        OrderPlaced(aggregate_id="x", data={"order_id": "x"})  # type: ignore[arg-type]
