"""`OutboxWriter`: adds an event to the outbox in the caller's own transaction.

The row commits with the state change it describes, or not at all; after the commit, the
callbacks given to `on_commit` (in-process relays' `notify`) run at once, so the relay does not
wait for its poll interval. The row goes out on the session's own driver connection, inside
its transaction (`core.db.driver`): it is on every publishing transaction, and through
`session.execute()` it cost about as much again as the service's own write.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import MetaData, insert
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.driver import DriverInsert
from core.messaging.events import BaseEvent, correlated
from core.messaging.outbox.store import outbox_table
from core.messaging.serialization import EventSerializer
from core.messaging.types import Headers
from core.tracing import kafka as tracing

COLUMNS = ("event_id", "topic", "key", "event_type", "payload", "headers", "created_at",
           "attempts")


def _now() -> datetime:
    return datetime.now(UTC)


class OutboxWriter:
    """Adds events to the outbox inside the caller's transaction. Stateless per call.

    Events are encoded by `serializer`, which stamps its `service_name` on every event that
    does not name its origin (`create_service` hands in the bus's, built from SERVICE_NAME).
    An event that names no correlation or causation id gets the current ones
    (`core.correlation`: the HTTP request's, or the handled event's). Inside a trace, the
    row keeps the current span's `traceparent` (`core.tracing`).
    """

    def __init__(self, metadata: MetaData, serializer: EventSerializer) -> None:
        self.table = outbox_table(metadata)
        # One statement, built once, its values passed as parameters: building `.values(...)`
        # per event (a bound parameter object per column, a fresh cache key) cost more than
        # the insert's round trip.
        self._insert = insert(self.table)
        self._driver: dict[str, DriverInsert] = {}  # per dialect, compiled on first use
        self._serializer = serializer
        self._on_commit: list[Callable[[], None]] = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` after any transaction that added events commits."""
        self._on_commit.append(callback)

    async def add(
        self,
        session: AsyncSession,
        topic: str,
        event: BaseEvent[Any],
        *,
        key: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Add `event` for `topic` (keyed by `key`, else its partition key); `headers` go on
        the record after the envelope's own (a saga's routing headers, say)."""
        event = correlated(event)
        value, envelope = self._serializer.serialize(event)
        if headers:
            envelope.extend(headers)
        envelope.extend(tracing.context_headers(envelope))  # the relay's send continues it
        sync = session.sync_session
        dialect = sync.get_bind().dialect
        driver = self._driver.get(dialect.name)
        if driver is None:
            driver = self._driver[dialect.name] = DriverInsert(self.table, COLUMNS, dialect,
                                                                self._insert)
        await driver.execute(session, {
            "event_id": str(event.event_id),
            "topic": topic,
            "key": key if key is not None else event.partition_key(),
            "event_type": event.EVENT_TYPE,
            "payload": value,
            "headers": [[name, raw.decode()] for name, raw in envelope],
            "created_at": _now(),
            "attempts": 0,
        })
        if self._on_commit and not sync.info.get("outbox_wakeup"):
            sync.info["outbox_wakeup"] = True
            # Listening for good, not `once=True`: a once-listener stays registered after it
            # fired, so listening again on a session reused for another transaction was a
            # no-op and that transaction's commit woke nobody.
            if not sa_event.contains(sync, "after_commit", self._committed):
                sa_event.listen(sync, "after_commit", self._committed)

    def _committed(self, session: Any) -> None:
        if not session.info.pop("outbox_wakeup", False):
            return  # this transaction added no event
        for callback in self._on_commit:
            callback()
