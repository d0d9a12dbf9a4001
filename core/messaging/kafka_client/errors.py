"""librdkafka's errors, read once: which refusals are permanent, which consumer errors last."""

from __future__ import annotations

from confluent_kafka import (
    KafkaError,
)

from core.messaging.errors import (
    DeliveryTimeoutError,
    ProducerStoppedError,
    PublishError,
    UnknownTopicError,
)

_PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
        KafkaError._INVALID_TYPE,
        # A missing topic, with brokers that create none on first use (as in production): a
        # delivery report once librdkafka has waited `topic.metadata.propagation.max.ms` (30 s)
        # for it to appear, then refused at once by produce() until a metadata refresh finds it.
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
    }
)


def _permanent(err: KafkaError) -> bool:
    """Whether resending the record cannot help as things stand. Not `err.retriable()`:
    librdkafka reports a delivery timeout (broker away) as not retriable too, and that one
    heals."""
    return err.code() in _PERMANENT_ERRORS


_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


def _publish_error(err: KafkaError, topic: str | None = None) -> PublishError:
    """The one translation of a refused record into `PublishError`, permanence included."""
    where = f"{topic}: " if topic else ""
    if err.code() in _PURGED:
        # In flight means sent: the broker may have stored it, so not "lost", only unconfirmed.
        return ProducerStoppedError(
            f"{where}the producer stopped before the broker acknowledged the record"
        )
    message = f"{where}{err}"
    if err.code() == KafkaError._MSG_TIMED_OUT:
        return DeliveryTimeoutError(message)
    if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        return UnknownTopicError(message, permanent=True)
    return PublishError(message, permanent=_permanent(err))


_CONSUMER_FAILURES = frozenset(
    {
        KafkaError._FATAL,
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.INVALID_GROUP_ID,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError._FENCED,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
    }
)


def _consumer_failed(err: KafkaError) -> bool:
    """Whether a consumer error will not heal by itself: librdkafka's fatal errors, and the
    ones that need someone to change credentials, ACLs or the group's configuration."""
    return bool(err.fatal()) or err.code() in _CONSUMER_FAILURES
