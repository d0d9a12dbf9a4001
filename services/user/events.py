"""The events the user service publishes, and its copies of the ones it consumes.

Consumed copies are `IntegrationEvent`s with only the fields read: they decode whether the
producer sent a `DomainEvent` (with `aggregate_id`) or an `IntegrationEvent` (with `key`),
and ignore fields added later. Published ones are `DomainEvent`s keyed by the user id, so one
user's events stay in order, and decode as either kind on the consumer's side.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.messaging import DomainEvent, IntegrationEvent

AUTH_EVENTS = "auth.events"
USER_EVENTS = "user.events"
USER_REQUESTS = "user.requests"


class UserRegisteredData(BaseModel):
    user_id: str
    email: str
    roles: list[str] = Field(default_factory=list)
    """Read, not kept: auth owns roles, and tokens carry them."""


class UserRegistered(IntegrationEvent[UserRegisteredData]):
    """auth's `auth.user_registered` (consumer-side copy)."""

    EVENT_TYPE = "auth.user_registered"


class ProfileCreatedData(BaseModel):
    user_id: str
    email: str
    display_name: str
    phone: str | None


class ProfileCreated(DomainEvent[ProfileCreatedData]):
    EVENT_TYPE = "user.profile_created"


class ProfileUpdatedData(BaseModel):
    user_id: str
    email: str
    display_name: str
    phone: str | None
    avatar_url: str | None
    changed: list[str]
    """The names of the fields this update changed (`preferences` for any preference)."""


class ProfileUpdated(DomainEvent[ProfileUpdatedData]):
    EVENT_TYPE = "user.profile_updated"


class GetContactData(BaseModel):
    user_id: str


class GetContact(IntegrationEvent[GetContactData]):
    """Request on `user.requests`: how to reach a user (the notification service asks)."""

    EVENT_TYPE = "user.get_contact"


class ContactData(BaseModel):
    user_id: str
    found: bool
    email: str | None = None
    display_name: str | None = None
    phone: str | None = None


class Contact(IntegrationEvent[ContactData]):
    """The reply to `user.get_contact`; `found=false` (other fields null) for an unknown user."""

    EVENT_TYPE = "user.contact"
