"""What the service does with the other services' events.

Each handler runs through the inbox: its writes (the contact copy, the notification, the
`notification.created` outbox row) commit with the inbox row in `ctx.session`, so a
redelivered event changes nothing. Sending is not done here (see delivery.py): a handler
only wakes the delivery task once its transaction commits.

Declared at import; what a handler uses of the running service (the outbox writer, the
contact directory, the delivery task) it takes from `ctx.runtime` when it runs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.app import OUTBOX_WRITER
from core.bases import ConfigurationError
from core.messaging import BaseEvent, EventRegistry, HandlerRegistry, MessageContext
from services.notification.contacts import DIRECTORY, ContactBook
from services.notification.delivery import DELIVERY, wake_after_commit
from services.notification.events import (
    DriverRegistered,
    DriverStatusChanged,
    PasswordChanged,
    ProfileCreated,
    ProfileUpdated,
    UserContact,
    UserRegistered,
)
from services.notification.rules import NotificationService
from services.notification.schemas import NotificationDraft

events = EventRegistry()
events.register(UserContact)  # the user service's answer, which the request client decodes
handlers = HandlerRegistry(events)
"""The service's handlers, on the one registry it decodes with (`events`)."""


@handlers.handles(UserRegistered, name="notification.welcome")
async def welcome(event: UserRegistered, ctx: MessageContext) -> None:
    await notify(ctx, event, event.data.user_id, "welcome", "Welcome aboard",
                 f"Your account {event.data.email} is ready.")


@handlers.handles(PasswordChanged, name="notification.password_changed")
async def password_changed(event: PasswordChanged, ctx: MessageContext) -> None:
    await notify(ctx, event, event.data.user_id, "security", "Your password was changed",
                 "If this was not you, reset your password and contact support.")


@handlers.handles(DriverRegistered, name="notification.driver_registered")
async def driver_registered(event: DriverRegistered, ctx: MessageContext) -> None:
    await notify(ctx, event, event.data.user_id, "driver", "You are registered as a driver",
                 f"Driver {event.data.driver_id} is yours; set your status to start.")


@handlers.handles(DriverStatusChanged, name="notification.driver_status_changed")
async def driver_status_changed(event: DriverStatusChanged, ctx: MessageContext) -> None:
    data = event.data
    await notify(ctx, event, data.user_id, "driver_status", f"You are now {data.new}",
                 f"Your driver status changed from {data.old or 'none'} to {data.new}.")


@handlers.handles(ProfileCreated, name="notification.contact.created")
@handlers.handles(ProfileUpdated, name="notification.contact.updated")
async def keep_profile(event: ProfileCreated | ProfileUpdated, ctx: MessageContext) -> None:
    session = _session(ctx)
    if await ContactBook(session).apply_profile(event.data, event.timestamp):
        wake_after_commit(session, ctx.runtime[DELIVERY].wake)  # notifications that waited


async def notify(ctx: MessageContext, cause: BaseEvent[Any], user_id: str, kind: str,
                 title: str, body: str) -> None:
    session = _session(ctx)
    contacts = ContactBook(session)
    known = await contacts.get(user_id) is not None
    if not known:
        # Holds this handler's transaction for at most the directory's short timeout.
        details = await ctx.runtime[DIRECTORY].ask(user_id, cause)
        if details is not None:
            await contacts.remember(details)
        # The profile may have come in while we asked; one that commits later still
        # finds this notification (the delivery task releases it).
        known = details is not None or await contacts.get(user_id) is not None
    await NotificationService(session, ctx.runtime[OUTBOX_WRITER]).notify(NotificationDraft(
        user_id=user_id, kind=kind, title=title, body=body,
        source_event_id=str(cause.event_id), contact_known=known), cause)
    if known:
        wake_after_commit(session, ctx.runtime[DELIVERY].wake)


def _session(ctx: MessageContext) -> AsyncSession:
    if not isinstance(ctx.session, AsyncSession):
        raise ConfigurationError("the notification handlers write through the database inbox "
                                 "(DatabaseIdempotencyStore): ctx.session is missing")
    return ctx.session
