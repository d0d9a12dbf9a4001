"""The events the auth service publishes on `auth.events` (fields per services/README.md);
keyed by user id, so one user's events stay in order."""

from __future__ import annotations

from pydantic import BaseModel

from core.messaging import DomainEvent, EventRegistry

TOPIC = "auth.events"


class UserRegisteredData(BaseModel):
    user_id: str
    email: str
    roles: list[str]


class UserRegistered(DomainEvent[UserRegisteredData]):
    EVENT_TYPE = "auth.user_registered"


class RolesChangedData(BaseModel):
    user_id: str
    roles: list[str]


class RolesChanged(DomainEvent[RolesChangedData]):
    EVENT_TYPE = "auth.roles_changed"


class PasswordChangedData(BaseModel):
    user_id: str


class PasswordChanged(DomainEvent[PasswordChangedData]):
    EVENT_TYPE = "auth.password_changed"


def registry() -> EventRegistry:
    events = EventRegistry()
    for cls in (UserRegistered, RolesChanged, PasswordChanged):
        events.register(cls)
    return events
