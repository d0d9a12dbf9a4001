"""Events as the other services would publish them, and stand-ins shared by the tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from core.messaging import BaseEvent, DomainEvent, RequestTimeoutError
from services.notification.events import (
    ContactData,
    DriverRegistered,
    DriverRegisteredData,
    DriverStatusChanged,
    DriverStatusChangedData,
    GetContact,
    PasswordChanged,
    PasswordChangedData,
    ProfileCreated,
    ProfileData,
    ProfileUpdated,
    UserContact,
    UserRegistered,
    UserRegisteredData,
)
from services.notification.senders import ContactDetails

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new_user() -> str:
    return str(uuid.uuid4())


def registered(user_id: str, email: str = "new@example.com") -> UserRegistered:
    return UserRegistered(service_name="auth", key=user_id,
                          data=UserRegisteredData(user_id=user_id, email=email, roles=["user"]))


def password_changed(user_id: str) -> PasswordChanged:
    return PasswordChanged(service_name="auth", key=user_id,
                           data=PasswordChangedData(user_id=user_id))


def profile_created(user_id: str, email: str, *, at: datetime = T0,
                    name: str = "Ada") -> ProfileCreated:
    return ProfileCreated(service_name="user", key=user_id, timestamp=at,
                          data=ProfileData(user_id=user_id, email=email, display_name=name))


def profile_updated(user_id: str, email: str, *, at: datetime,
                    name: str = "Ada") -> ProfileUpdated:
    return ProfileUpdated(service_name="user", key=user_id, timestamp=at,
                          data=ProfileData(user_id=user_id, email=email, display_name=name))


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def driver_registered(user_id: str) -> DriverRegistered:
    driver_id = str(uuid.uuid4())
    return DriverRegistered(service_name="driver", key=driver_id, data=DriverRegisteredData(
        driver_id=driver_id, user_id=user_id, licence_number="L-123"))


def driver_status_changed(user_id: str, new: str = "available") -> DriverStatusChanged:
    driver_id = str(uuid.uuid4())
    return DriverStatusChanged(service_name="driver", key=driver_id, data=DriverStatusChangedData(
        driver_id=driver_id, user_id=user_id, old="offline", new=new))


def contact_reply(request: GetContact, known: dict[str, ContactDetails]) -> UserContact:
    """The user service's answer to `request`, from `known`."""
    user_id = request.data.user_id
    details = known.get(user_id)
    data = ContactData(user_id=user_id, found=details is not None,
                       email=details.email if details else None,
                       display_name=details.display_name if details else None,
                       phone=details.phone if details else None)
    return request.caused(UserContact, data, key=user_id)


class StandInUsers:
    """A `Requester` that answers like the user service, in memory; silent (a timeout) for
    users in `silent`."""

    def __init__(self) -> None:
        self.known: dict[str, ContactDetails] = {}
        self.silent: set[str] = set()
        self.asked: list[str] = []

    async def send_request(self, topic: str, request: BaseEvent[Any], timeout: float, *,
                           key: str | None = None) -> BaseEvent[Any]:
        assert topic == "user.requests" and isinstance(request, GetContact)
        assert key == request.data.user_id
        self.asked.append(request.data.user_id)
        if request.data.user_id in self.silent:
            raise RequestTimeoutError(f"no reply within {timeout}s")
        return contact_reply(request, self.known)


class AuthUserRegistered(DomainEvent[UserRegisteredData]):
    """`auth.user_registered` as the auth service may declare it (a domain event with an
    `aggregate_id` in the envelope): the notification service's copy reads it all the same."""

    EVENT_TYPE = "auth.user_registered"


def registered_by_auth(user_id: str, email: str) -> AuthUserRegistered:
    return AuthUserRegistered(aggregate_id=user_id, service_name="auth", data=UserRegisteredData(
        user_id=user_id, email=email, roles=["user"]))
