"""What clients receive (notifications are made by events, never sent by clients)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class NotificationPublic(BaseModel):
    id: uuid.UUID
    kind: str = Field(description="welcome, security, driver or driver_status.")
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None
    delivery_status: str = Field(
        description="awaiting_contact, pending, sent or failed: how far delivery got.")
    delivery_attempts: int


class NotificationDraft(BaseModel):
    """A notification an event handler asks for (the service's create schema)."""

    user_id: str
    kind: str
    title: str = Field(max_length=200)
    body: str
    source_event_id: str
    contact_known: bool
    """False: delivery waits for the user's contact details (`awaiting_contact`)."""


class NotificationChange(BaseModel):
    """Nothing a client may change but `read_at`, which has its own route."""
