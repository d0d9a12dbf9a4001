"""`messaging_tables`: the tables a service's messaging needs, declared in its own metadata
with one call, so they are migrated with the rest of its schema."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import MetaData, Table

from core.messaging.inbox import inbox_table
from core.messaging.outbox import lease_table, outbox_table


class MessagingTables(NamedTuple):
    outbox: Table
    """Events written in the service's transactions, published by the relay."""
    lease: Table
    """Which instance's relay publishes (one at a time, so per-key order holds)."""
    inbox: Table | None
    """Events already handled, for exactly-once effects; None for a service that consumes
    nothing (`inbox=False`)."""


def messaging_tables(metadata: MetaData, *, inbox: bool = True) -> MessagingTables:
    """Declare the outbox, its relay lease and (unless `inbox=False`) the inbox in
    `metadata`. Idempotent: a table already declared is returned as it is."""
    return MessagingTables(outbox_table(metadata), lease_table(metadata),
                           inbox_table(metadata) if inbox else None)
