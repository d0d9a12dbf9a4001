"""Errors of the messaging layer; one root so callers can catch the family."""

from __future__ import annotations


class MessagingError(Exception):
    """Root of every error raised by core.messaging."""


class DeserializationError(MessagingError):
    """A record could not be turned into an event; it is poison, retrying will not help."""


class MalformedEventError(DeserializationError):
    """The record's bytes are not a valid event envelope."""


class UnknownEventError(DeserializationError):
    """The record names an event type or version this service does not know."""


class UnknownEventTypeError(UnknownEventError):
    """The record's event type is not one this process knows at all (another team's event on
    a shared topic): not poison for this consumer, only none of its business."""


class PublishError(MessagingError):
    """The broker did not acknowledge a record. `permanent` when sending the same record
    again cannot succeed as things stand (too large, invalid or missing topic, not
    authorized)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class ProducerStoppedError(PublishError):
    """The producer stopped before the broker acknowledged the record, or was already stopped."""


class UnknownTopicError(PublishError):
    """The topic does not exist, and the brokers create none on first use."""


class DeliveryTimeoutError(PublishError):
    """No acknowledgement within the producer's message timeout: the broker or the partition's
    leader was away (heals), or the topic does not exist (does not, until someone creates it)."""


class RequestTimeoutError(MessagingError):
    """No reply arrived for a request within its timeout."""


class RequestCancelledError(MessagingError):
    """The request-reply client stopped while the request waited for its reply."""


class RemoteHandlerError(MessagingError):
    """The responder handled the request and answered with an error."""


class ConsumerStoppedError(MessagingError):
    """The consumer was stopped before the operation finished."""


class ConsumerFailedError(MessagingError):
    """The consumer hit an error it cannot recover from (authentication, authorization, a
    fenced or invalid group member) and stopped; restarting it as it is will not help."""


class TopicSetupError(MessagingError):
    """A topic the component needs does not exist and could not be created."""


class StoreUnavailableError(MessagingError):
    """The idempotency store (the inbox's database) could not be reached or had no free
    connection: not the handler's fault, so it costs no attempt and never dead-letters."""


class PermanentHandlerError(MessagingError):
    """Raised by a handler that knows retrying cannot help; the record goes straight to the DLQ."""
