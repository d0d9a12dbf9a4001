"""Typed events over Kafka: what a service declares, publishes and handles.

The public surface (pinned by `tests/unit/test_public_api.py`): services import from here, not
from the modules below, which may move. Tools and tests that need a module's internals import
that module.
"""

from core.messaging.dispatch import DEFAULT_RETRY, Outcome
from core.messaging.dlq import (
    H_ATTEMPTS,
    H_ERROR,
    DeadLetter,
    DeadLetterSink,
    KafkaDeadLetterSink,
    dlq_topic,
)
from core.messaging.errors import (
    ConsumerFailedError,
    DeserializationError,
    MessagingError,
    PermanentHandlerError,
    PublishError,
    RequestTimeoutError,
    UnknownEventTypeError,
)
from core.messaging.event_bus import EventBus, InMemoryEventBus, KafkaEventBus
from core.messaging.events import BaseEvent, DomainEvent, IntegrationEvent
from core.messaging.handlers import HandlerMiddleware, HandlerRegistry
from core.messaging.inbox import DatabaseIdempotencyStore, inbox_table
from core.messaging.kafka_client import KafkaAdmin, TopicFollower, read_topic
from core.messaging.outbox import OutboxRelay, OutboxWriter
from core.messaging.request_reply import RequestReplyClient, RequestResponder
from core.messaging.serialization import EventRegistry, EventSerializer
from core.messaging.tables import MessagingTables, messaging_tables
from core.messaging.types import EventHandler, Headers, MessageContext, Record

__all__ = [
    "DEFAULT_RETRY",
    "H_ATTEMPTS",
    "H_ERROR",
    "BaseEvent",
    "ConsumerFailedError",
    "DatabaseIdempotencyStore",
    "DeadLetter",
    "DeadLetterSink",
    "DeserializationError",
    "DomainEvent",
    "EventBus",
    "EventHandler",
    "EventRegistry",
    "EventSerializer",
    "HandlerMiddleware",
    "HandlerRegistry",
    "Headers",
    "InMemoryEventBus",
    "IntegrationEvent",
    "KafkaAdmin",
    "KafkaDeadLetterSink",
    "KafkaEventBus",
    "MessageContext",
    "MessagingError",
    "MessagingTables",
    "OutboxRelay",
    "OutboxWriter",
    "Outcome",
    "PermanentHandlerError",
    "PublishError",
    "Record",
    "RequestReplyClient",
    "RequestResponder",
    "RequestTimeoutError",
    "TopicFollower",
    "UnknownEventTypeError",
    "dlq_topic",
    "inbox_table",
    "messaging_tables",
    "read_topic",
]
