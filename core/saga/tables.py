"""`saga_tables(metadata)`: the orchestrator's two tables, declared in the service's own
metadata so its migrations create them (as `messaging_tables` does for the outbox).

- `saga_instances`: one row per saga: its type, data (JSON), status, the step in progress,
  the command whose reply it awaits, the deadline of that reply (or of the next compensation
  attempt), the compensation attempts so far, the last error, and a `version` every transition
  compares and bumps, so of two instances racing on one saga exactly one moves it.
- `saga_steps`: the history, one row per transition with its time and detail.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from core.db.models import table_key

INSTANCES = "saga_instances"
STEPS = "saga_steps"

RUNNING = "running"
COMPENSATING = "compensating"
COMPLETED = "completed"
COMPENSATED = "compensated"
NEEDS_ATTENTION = "needs_attention"
STATUSES = (RUNNING, COMPENSATING, COMPLETED, COMPENSATED, NEEDS_ATTENTION)
ACTIVE = (RUNNING, COMPENSATING)
"""The statuses the sweeper looks at: a deadline still matters."""
CAUSES = ("failed", "timed_out", "cancelled")
"""The history events that turn a saga back (a refusal, no reply in time, a cancel): the
first one is why it did not go through, whatever its compensations met later."""


class SagaTables(NamedTuple):
    instances: Table
    steps: Table


def saga_tables(metadata: MetaData) -> SagaTables:
    """Declare (once; later calls return them) the saga tables in `metadata`."""
    existing = metadata.tables.get(table_key(metadata, INSTANCES))
    if existing is not None:
        return SagaTables(existing, metadata.tables[table_key(metadata, STEPS)])
    instances = Table(
        INSTANCES, metadata,
        Column("id", String(36), primary_key=True),
        Column("saga_type", String(100), nullable=False),
        Column("data", JSON, nullable=False),
        Column("status", String(20), nullable=False),
        Column("step", Integer, nullable=False),
        Column("command_id", String(36), nullable=True),
        Column("deadline", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("version", Integer, nullable=False),
        Column("last_error", Text, nullable=True),
        Column("correlation_id", String(64), nullable=True),
        # The traceparent current when the saga began: what the sweeper sends continues it.
        Column("trace_context", String(64), nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        # The sweeper's question, every second: which active sagas are due.
        Index("ix_saga_instances_due", "status", "deadline"),
        Index("ix_saga_instances_type_status", "saga_type", "status"),
    )
    prefix = f"{metadata.schema}." if metadata.schema else ""
    steps = Table(
        STEPS, metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
               autoincrement=True),
        Column("saga_id", String(36), ForeignKey(f"{prefix}{INSTANCES}.id"), nullable=False,
               index=True),
        Column("step", Integer, nullable=False),
        Column("step_name", String(100), nullable=False),
        Column("event", String(40), nullable=False),
        Column("status", String(20), nullable=False),
        Column("detail", Text, nullable=True),
        Column("at", DateTime(timezone=True), nullable=False),
    )
    return SagaTables(instances, steps)
