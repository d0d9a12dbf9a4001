"""Event sourcing on a service's own database: streams of typed events appended with
optimistic concurrency (`event_store`), snapshots (`snapshots`), aggregates rebuilt from their
events (`aggregate`) and loaded and saved by a repository (`repository`). Appended events
reach Kafka through the service's transactional outbox, in the append's transaction.

The public surface (pinned by `tests/unit/test_public_api.py`): services import from here.
"""

from core.event_sourcing.aggregate import Aggregate, applies
from core.event_sourcing.errors import (
    AggregateNotFoundError,
    DuplicateEventError,
    EventSourcingError,
    StreamConflictError,
    UnhandledEventError,
    UnreadableEventError,
)
from core.event_sourcing.event_store import NO_STREAM, EventStore, RecordedEvent
from core.event_sourcing.repository import AggregateRepository
from core.event_sourcing.snapshots import Snapshot, SnapshotStore
from core.event_sourcing.tables import EventStoreTables, event_store_tables

__all__ = [
    "NO_STREAM",
    "Aggregate",
    "AggregateNotFoundError",
    "AggregateRepository",
    "DuplicateEventError",
    "EventSourcingError",
    "EventStore",
    "EventStoreTables",
    "RecordedEvent",
    "Snapshot",
    "SnapshotStore",
    "StreamConflictError",
    "UnhandledEventError",
    "UnreadableEventError",
    "applies",
    "event_store_tables",
]
