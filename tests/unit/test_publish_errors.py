"""Which refusals the outbox relay parks: only those a resend cannot heal."""

from __future__ import annotations

from confluent_kafka import KafkaError

from core.messaging.kafka_client import _permanent


def test_a_record_too_large_is_permanent_a_delivery_timeout_is_not() -> None:
    assert _permanent(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert _permanent(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    # librdkafka calls a timed-out delivery "not retriable", yet the broker coming back heals it.
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    assert not timed_out.retriable() and not _permanent(timed_out)
    assert not _permanent(KafkaError(KafkaError._TRANSPORT))
