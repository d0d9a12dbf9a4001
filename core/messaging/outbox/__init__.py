"""The transactional outbox, one module per part: `writer` (`OutboxWriter`, the row in the
caller's transaction), `relay` (`OutboxRelay`, publishing in order per key; its docstring
states the ordering and failure semantics), `store` (the tables and the tools for parked
rows) and `lease` (which relay publishes). What services use is re-exported here."""

from core.messaging.outbox.relay import RELAY_PRODUCER, OutboxMetrics, OutboxRelay, relay_producer
from core.messaging.outbox.store import (
    LEASE,
    MAX_ATTEMPTS,
    OUTBOX,
    ParkedEvent,
    discard,
    lease_table,
    outbox_table,
    parked,
    requeue,
)
from core.messaging.outbox.writer import OutboxWriter

__all__ = [
    "LEASE", "MAX_ATTEMPTS", "OUTBOX", "RELAY_PRODUCER", "OutboxMetrics", "OutboxRelay",
    "OutboxWriter", "ParkedEvent", "discard", "lease_table", "outbox_table", "parked",
    "relay_producer", "requeue",
]
