"""The event this service publishes, and its copies of the ones it consumes (the fields it
reads, per services/README.md; unknown fields are ignored).

Consumed events are declared as `IntegrationEvent`s: they decode whether or not the publisher
puts an `aggregate_id` in the envelope.
"""

from __future__ import annotations

from pydantic import BaseModel

from core.messaging import IntegrationEvent

AUTH_EVENTS = "auth.events"
USER_EVENTS = "user.events"
DRIVER_EVENTS = "driver.events"
USER_REQUESTS = "user.requests"
NOTIFICATION_EVENTS = "notification.events"

# --- published -----------------------------------------------------------------------------


class NotificationCreatedData(BaseModel):
    notification_id: str
    user_id: str
    kind: str


class NotificationCreated(IntegrationEvent[NotificationCreatedData]):
    """On `notification.events`, keyed by the user id."""

    EVENT_TYPE = "notification.created"


# --- consumed: auth.events -----------------------------------------------------------------


class UserRegisteredData(BaseModel):
    user_id: str
    email: str
    roles: list[str] = []


class UserRegistered(IntegrationEvent[UserRegisteredData]):
    EVENT_TYPE = "auth.user_registered"


class PasswordChangedData(BaseModel):
    user_id: str


class PasswordChanged(IntegrationEvent[PasswordChangedData]):
    EVENT_TYPE = "auth.password_changed"


# --- consumed: user.events -----------------------------------------------------------------


class ProfileData(BaseModel):
    user_id: str
    email: str
    display_name: str
    phone: str | None = None


class ProfileCreated(IntegrationEvent[ProfileData]):
    EVENT_TYPE = "user.profile_created"


class ProfileUpdated(IntegrationEvent[ProfileData]):
    """Carries the whole profile after the change (`changed` names the fields), so a copy
    needs no earlier event to be complete."""

    EVENT_TYPE = "user.profile_updated"


# --- consumed: driver.events ---------------------------------------------------------------


class DriverRegisteredData(BaseModel):
    driver_id: str
    user_id: str
    licence_number: str = ""


class DriverRegistered(IntegrationEvent[DriverRegisteredData]):
    EVENT_TYPE = "driver.registered"


class DriverStatusChangedData(BaseModel):
    driver_id: str
    user_id: str
    old: str | None = None
    new: str


class DriverStatusChanged(IntegrationEvent[DriverStatusChangedData]):
    EVENT_TYPE = "driver.status_changed"


# --- request-reply with the user service (user.requests) -----------------------------------


class GetContactData(BaseModel):
    user_id: str


class GetContact(IntegrationEvent[GetContactData]):
    """Request on `user.requests`, keyed by the user id."""

    EVENT_TYPE = "user.get_contact"


class ContactData(BaseModel):
    user_id: str
    found: bool
    email: str | None = None
    display_name: str | None = None
    phone: str | None = None


class UserContact(IntegrationEvent[ContactData]):
    """The user service's reply to `GetContact`."""

    EVENT_TYPE = "user.contact"
