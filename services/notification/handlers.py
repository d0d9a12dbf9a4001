"""What the service does with the other services' events.

Each handler runs through the inbox: its writes (the contact copy, the notification, the
`notification.created` outbox row) commit with the inbox row in `ctx.session`, so a
redelivered event changes nothing. Sending is not done here (see delivery.py): a handler
only wakes the delivery task once its transaction commits.

The handlers need parts that exist only once the service runs (the outbox writer, the
request-reply client, the delivery task), while `create_service` needs the handler registry
before that. So `build_handlers` closes over a `Wiring` that the start-up hook fills in
(main.py), and handlers wait for it: no module-level state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.bases import ConfigurationError
from core.bases.types import EventOutbox
from core.messaging.events import BaseEvent
from core.messaging.handlers import HandlerRegistry
from core.messaging.serialization import EventRegistry
from core.messaging.types import MessageContext
from services.notification.contacts import ContactBook, ContactDirectory
from services.notification.delivery import wake_after_commit
from services.notification.events import (
    DriverRegistered,
    DriverStatusChanged,
    PasswordChanged,
    ProfileCreated,
    ProfileUpdated,
    UserRegistered,
)
from services.notification.schemas import NotificationDraft
from services.notification.services import NotificationService

READY_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Parts:
    """What handlers use of the running service."""

    outbox: EventOutbox
    directory: ContactDirectory
    """Asks the user service for contact details the copy lacks."""
    wake: Callable[[], None]
    """Tells the delivery task that a notification became due."""


class Wiring:
    """Hands the running service's `Parts` to handlers built before it ran. Filled once."""

    def __init__(self) -> None:
        self._parts: Parts | None = None
        self._ready = asyncio.Event()

    def attach(self, parts: Parts) -> None:
        if self._parts is not None:
            raise RuntimeError("the handlers' wiring is already attached")
        self._parts = parts
        self._ready.set()

    async def parts(self, timeout: float = READY_TIMEOUT) -> Parts:
        """The parts; waits for start-up to finish (consumers start before hooks run).
        A TimeoutError is a handler failure: the consumer retries the event."""
        if self._parts is None:
            await asyncio.wait_for(self._ready.wait(), timeout)
        assert self._parts is not None
        return self._parts


def build_handlers(wiring: Wiring, events: EventRegistry | None = None) -> HandlerRegistry:
    """The service's handlers, registered on `events` (the service's one registry)."""
    handlers = HandlerRegistry(events)

    async def notify(ctx: MessageContext, cause: BaseEvent[Any], user_id: str, kind: str,
                     title: str, body: str) -> None:
        parts = await wiring.parts()
        session = _session(ctx)
        contacts = ContactBook(session)
        known = await contacts.get(user_id) is not None
        if not known:
            # Holds this handler's transaction for at most the directory's short timeout.
            details = await parts.directory.ask(user_id, cause)
            if details is not None:
                await contacts.remember(details)
            # The profile may have come in while we asked; one that commits later still
            # finds this notification (the delivery task releases it).
            known = details is not None or await contacts.get(user_id) is not None
        await NotificationService(session, parts.outbox).notify(NotificationDraft(
            user_id=user_id, kind=kind, title=title, body=body,
            source_event_id=str(cause.event_id), contact_known=known), cause)
        if known:
            wake_after_commit(session, parts.wake)

    async def keep_profile(event: ProfileCreated | ProfileUpdated, ctx: MessageContext) -> None:
        parts = await wiring.parts()
        session = _session(ctx)
        if await ContactBook(session).apply_profile(event.data, event.timestamp):
            wake_after_commit(session, parts.wake)  # notifications that waited for it

    handlers.add(ProfileCreated, keep_profile, name="notification.contact.created")
    handlers.add(ProfileUpdated, keep_profile, name="notification.contact.updated")

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

    return handlers


def _session(ctx: MessageContext) -> AsyncSession:
    if not isinstance(ctx.session, AsyncSession):
        raise ConfigurationError("the notification handlers write through the database inbox "
                                 "(DatabaseIdempotencyStore): ctx.session is missing")
    return ctx.session
