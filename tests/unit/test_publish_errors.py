"""Which refusals the outbox relay parks: only those a resend cannot heal."""

from __future__ import annotations

from confluent_kafka import KafkaError

from core.messaging.errors import DeliveryTimeoutError, UnknownTopicError
from core.messaging.kafka_client import _permanent, _publish_error


def test_a_record_too_large_is_permanent_a_delivery_timeout_is_not() -> None:
    assert _permanent(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert _permanent(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    # librdkafka calls a timed-out delivery "not retriable", yet the broker coming back heals it.
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    assert not timed_out.retriable() and not _permanent(timed_out)
    assert not _permanent(KafkaError(KafkaError._TRANSPORT))


def test_a_missing_topic_is_permanent_and_a_timeout_says_it_timed_out() -> None:
    # With brokers that create no topic on first use, resending to a missing topic cannot help.
    assert _permanent(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    assert _permanent(KafkaError(KafkaError._UNKNOWN_TOPIC))
    missing = _publish_error(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), "orders")
    assert isinstance(missing, UnknownTopicError) and missing.permanent
    timed_out = _publish_error(KafkaError(KafkaError._MSG_TIMED_OUT), "orders")
    assert isinstance(timed_out, DeliveryTimeoutError) and not timed_out.permanent
    assert str(timed_out).startswith("orders: ")
    refused = _publish_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), "orders")
    assert refused.permanent and not isinstance(refused, DeliveryTimeoutError)
