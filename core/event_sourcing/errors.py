"""Errors of the event store and aggregates; one root so callers can catch the family."""

from __future__ import annotations


class EventSourcingError(Exception):
    """Root of every error raised by core.event_sourcing."""


class StreamConflictError(EventSourcingError):
    """The stream was not at the expected version: another writer appended first (or the
    caller's expected version was wrong). Nothing of the append was written; load again,
    re-run the command, append again."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream_id!r}: expected version {expected}, found {actual}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class DuplicateEventError(EventSourcingError):
    """An event with this id is already stored: a fact is recorded once. The transaction is
    unusable afterwards (PostgreSQL aborts it); roll it back."""


class UnreadableEventError(EventSourcingError):
    """A stored event could not be decoded into a known event class (its type is not
    registered here, no upcaster lifts its version, or the body does not validate)."""

    def __init__(self, stream_id: str, position: int, reason: str) -> None:
        super().__init__(f"stream {stream_id!r} position {position}: {reason}")
        self.stream_id = stream_id
        self.position = position


class AggregateNotFoundError(EventSourcingError):
    """No event was ever appended to the aggregate's stream."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"stream {stream_id!r} has no events")
        self.stream_id = stream_id


class UnhandledEventError(EventSourcingError):
    """An aggregate met an event type none of its `@applies` methods takes: a replay would
    silently drop the event's effect, so it fails instead."""
