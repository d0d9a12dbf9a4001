"""Sagas: multi-service transactions as persisted steps over Kafka, with compensation.

A definition (`SagaDefinition`, `SagaStep`, `Compensation`) lists the steps; the orchestrator
(`SagaOrchestrator`, built by `saga_hook`, reached as `runtime[SAGAS]`) keeps every instance
and transition in the service's own tables (`saga_tables`), sends each command through the
outbox in the transaction that records it, applies replies (`saga_replies`) once per step,
sweeps deadlines from the database, compensates in reverse with retries, and parks what it
cannot undo as `needs_attention`. Participants answer with `participant` / `reply`. Operators
use `saga_admin_router` and `python -m core sagas`. See docs/sagas.md.
"""

from core.saga.admin import saga_admin_router
from core.saga.compensation import COMPENSATION_RETRY
from core.saga.errors import (
    SagaDefinitionError,
    SagaError,
    SagaNotFoundError,
    SagaStateError,
    UnknownSagaError,
)
from core.saga.participant import participant, reply
from core.saga.saga_orchestrator import H_SAGA_ID, H_SAGA_STEP, SagaOrchestrator
from core.saga.saga_step import Compensation, SagaDefinition, SagaStep
from core.saga.store import SagaRecord, SagaStore, StepEntry
from core.saga.tables import (
    COMPENSATED,
    COMPENSATING,
    COMPLETED,
    NEEDS_ATTENTION,
    RUNNING,
    SagaTables,
    saga_tables,
)
from core.saga.wiring import SAGAS, saga_hook, saga_replies

__all__ = [
    "COMPENSATED",
    "COMPENSATING",
    "COMPENSATION_RETRY",
    "COMPLETED",
    "H_SAGA_ID",
    "H_SAGA_STEP",
    "NEEDS_ATTENTION",
    "RUNNING",
    "SAGAS",
    "Compensation",
    "SagaDefinition",
    "SagaDefinitionError",
    "SagaError",
    "SagaNotFoundError",
    "SagaOrchestrator",
    "SagaRecord",
    "SagaStateError",
    "SagaStep",
    "SagaStore",
    "SagaTables",
    "StepEntry",
    "UnknownSagaError",
    "participant",
    "reply",
    "saga_admin_router",
    "saga_hook",
    "saga_replies",
    "saga_tables",
]
