"""The backward half of the saga state machine: compensating completed steps in reverse.

A compensation is a command too; its success reply moves to the next lower step that has one.
A failure reply, or no reply by its deadline, is a failed attempt: the compensation is sent
again after an exponential backoff with full jitter (`COMPENSATION_RETRY`), as a new command
(a new event id, so the participant's inbox runs it again), until `max_attempts`; then the
saga is `needs_attention`: kept, logged, counted and listed, waiting for an operator's retry.
Steps without a compensation are passed over.
"""

from __future__ import annotations

from typing import Any

from core.resilience import RetryPolicy
from core.saga.saga_step import SagaDefinition
from core.saga.store import Change, SagaRecord
from core.saga.tables import COMPENSATED, COMPENSATING, NEEDS_ATTENTION
from core.saga.transitions import Decision, History, command

COMPENSATION_RETRY = RetryPolicy(max_attempts=5, initial_delay=1.0, max_delay=60.0)
"""Attempts per compensation (the first included), and the backoff between them."""


def last_compensable(definition: SagaDefinition[Any], at: int) -> int | None:
    """The highest step index <= `at` that has a compensation."""
    for index in range(min(at, len(definition.steps) - 1), -1, -1):
        if definition.steps[index].compensation is not None:
            return index
    return None


def compensate_from(definition: SagaDefinition[Any], record: SagaRecord, at: int,
                    history: History, last_error: str | None, *, attempts: int = 1) -> Decision:
    """Compensate steps `at`, `at - 1`, ... 0 that have a compensation, the highest first; a
    saga with nothing to undo is compensated at once."""
    index = last_compensable(definition, at)
    if index is None:
        history.append((max(at, 0), definition.steps[max(at, 0)].name, "compensated_all",
                        COMPENSATED, None))
        return Decision(Change(COMPENSATED, max(at, 0), record.data, None, None, 0, last_error),
                        history, outcome=COMPENSATED)
    return send_compensation(definition, record, index, history, last_error, attempts)


def send_compensation(definition: SagaDefinition[Any], record: SagaRecord, index: int,
                      history: History, last_error: str | None, attempts: int) -> Decision:
    step = definition.steps[index]
    assert step.compensation is not None
    data = definition.load(record.data)
    out = command(definition, record.id, record.correlation_id, data, index, compensating=True)
    history.append((index, step.name, "compensation_sent", COMPENSATING,
                    f"attempt {attempts}: {out.event.EVENT_TYPE} to {out.topic}"))
    return Decision(Change(COMPENSATING, index, record.data, str(out.event.event_id),
                           step.compensation.timeout, attempts, last_error), history, out)


def compensation_succeeded(definition: SagaDefinition[Any], record: SagaRecord,
                           reply_type: str) -> Decision:
    step = definition.steps[record.step]
    history: History = [(record.step, step.name, "compensated", COMPENSATING, reply_type)]
    if record.step == 0 or last_compensable(definition, record.step - 1) is None:
        history.append((record.step, step.name, "compensated_all", COMPENSATED, None))
        return Decision(Change(COMPENSATED, record.step, record.data, None, None, 0,
                               record.last_error), history, outcome=COMPENSATED)
    return compensate_from(definition, record, record.step - 1, history, record.last_error)


def compensation_failed(definition: SagaDefinition[Any], record: SagaRecord, reason: str,
                        policy: RetryPolicy) -> Decision:
    """Attempt `record.attempts` failed: wait and send again, or, out of attempts, stop at
    `needs_attention`."""
    step = definition.steps[record.step]
    error = f"compensation of {step.name} failed (attempt {record.attempts}): {reason}"
    if record.attempts >= policy.max_attempts:
        history: History = [(record.step, step.name, "compensation_failed", NEEDS_ATTENTION,
                             error)]
        return Decision(Change(NEEDS_ATTENTION, record.step, record.data, None, None,
                               record.attempts, error), history, outcome=NEEDS_ATTENTION)
    wait = max(policy.delay(record.attempts), 0.001)
    history = [(record.step, step.name, "compensation_failed", COMPENSATING,
                f"{error}; next attempt in {wait:.2f}s")]
    return Decision(Change(COMPENSATING, record.step, record.data, None, wait, record.attempts,
                           error), history, outcome="compensation_failed")


def compensation_due(definition: SagaDefinition[Any], record: SagaRecord) -> Decision:
    """The backoff after a failed attempt is over: send the compensation again."""
    return send_compensation(definition, record, record.step, [], record.last_error,
                             record.attempts + 1)
