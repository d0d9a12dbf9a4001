"""The console's audit trail: each action an operator takes is an event on `gateway.events`,
naming who did it, so a replay can be traced later (and shown beside its dead letter)."""

from __future__ import annotations

from pydantic import BaseModel

from core.messaging import IntegrationEvent

GATEWAY_EVENTS = "gateway.events"


class DeadLetterReplayedData(BaseModel):
    topic: str
    """The original topic the letter went back to."""
    dlq_partition: int
    dlq_offset: int
    event_type: str | None
    event_id: str | None
    by: str
    """The operator's subject (user id), from their verified token."""
    by_name: str
    """Their email when the token names one, else the subject again."""


class DeadLetterReplayed(IntegrationEvent[DeadLetterReplayedData]):
    EVENT_TYPE = "gateway.dead_letter_replayed"
