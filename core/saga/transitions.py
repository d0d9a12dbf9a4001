"""The saga state machine, without I/O: given an instance and what happened, the `Decision`
(what to write, what to send). `saga_orchestrator` reads, decides here, and writes the decision
in one transaction; `compensation` holds the backward half.

Forward: a step's success reply moves to the next step (or completes the saga); a failure
reply compensates the completed steps before it; a timeout compensates the timed-out step too
(its command may have acted, the reply lost or late), then the earlier ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from core.messaging import BaseEvent
from core.saga.saga_step import SagaDefinition, SagaStep
from core.saga.store import Change, SagaRecord
from core.saga.tables import COMPLETED, RUNNING

History = list[tuple[int, str, str, str, str | None]]
"""(step, step name, event, status after, detail) rows for the history table."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A command to send with the transition, through the outbox."""

    topic: str
    key: str
    event: BaseEvent[Any]
    step: int
    step_name: str
    compensating: bool


@dataclass(frozen=True, slots=True)
class Decision:
    change: Change
    history: History = field(default_factory=list)
    send: Outgoing | None = None
    outcome: str | None = None
    """The counter this decision bumps ("completed", "compensated", "needs_attention", ...)."""

    @property
    def ended(self) -> bool:
        return self.change.command_id is None and self.change.wait is None


def command(definition: SagaDefinition[Any], saga_id: str, correlation_id: str | None,
            data: BaseModel, index: int, *, compensating: bool = False) -> Outgoing:
    """Step `index`'s command (or its compensation) built from `data`, carrying the saga's
    correlation id unless the builder set one."""
    step: SagaStep[Any] = definition.steps[index]
    if compensating:
        assert step.compensation is not None
        event, topic = step.compensation.command(data), step.compensation_topic
    else:
        event, topic = step.command(data), step.topic
    if event.correlation_id is None and correlation_id is not None:
        event = event.model_copy(update={"correlation_id": correlation_id})
    key = step.key(data) if step.key is not None else saga_id
    return Outgoing(topic, key, event, index, step.name, compensating)


def send_step(definition: SagaDefinition[Any], saga_id: str, correlation_id: str | None,
              data: BaseModel, index: int, history: History) -> Decision:
    """Move saga `saga_id` to step `index`: send its command and wait for its reply. (A
    running saga has no error: errors come with turning back, and a saga never runs again.)"""
    step = definition.steps[index]
    out = command(definition, saga_id, correlation_id, data, index)
    history.append((index, step.name, "sent", RUNNING, f"{out.event.EVENT_TYPE} to {out.topic}"))
    return Decision(Change(RUNNING, index, data.model_dump(mode="json"),
                           str(out.event.event_id), step.timeout, 0, None),
                    history, out)


def step_succeeded(definition: SagaDefinition[Any], record: SagaRecord,
                   reply: BaseEvent[Any]) -> Decision:
    index = record.step
    step = definition.steps[index]
    data = definition.load(record.data)
    if step.on_success is not None:
        data = step.on_success(data, reply)
    history: History = [(index, step.name, "succeeded", RUNNING, reply.EVENT_TYPE)]
    if index + 1 < len(definition.steps):
        return send_step(definition, record.id, record.correlation_id, data, index + 1,
                         history)
    history.append((index, step.name, "completed", COMPLETED, None))
    return Decision(Change(COMPLETED, index, data.model_dump(mode="json"), None, None, 0, None),
                    history, outcome=COMPLETED)


def reason_of(reply: BaseEvent[Any]) -> str:
    """A failure reply's reason: its data's `reason` (or `error`) when it has one, else its
    type."""
    for name in ("reason", "error"):
        value = getattr(reply.data, name, None)
        if isinstance(value, str) and value:
            return f"{reply.EVENT_TYPE}: {value}"
    return reply.EVENT_TYPE
