"""What the user service does with events and requests: profiles for new users (from
`auth.events`, through the inbox), cache invalidation (from its own `user.events`), and the
answers to `user.get_contact` (on `user.requests`).

Each builder takes what its handlers use, so `create_app` builds them per app and nothing is
built at import.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Generic, TypeVar

from core.bases.types import EventOutbox
from core.db.engine import Database
from core.messaging.exceptions import PermanentHandlerError
from core.messaging.handlers import HandlerRegistry
from core.messaging.request_reply import RequestResponder
from core.messaging.serialization import EventRegistry
from core.messaging.types import MessageContext
from services.user.cache import ProfileCache
from services.user.events import Contact, GetContact, ProfileUpdated, UserRegistered
from services.user.services import ProfileService

log = logging.getLogger(__name__)

T = TypeVar("T")

REGISTRATION_HANDLER = "user.create_profile"
INVALIDATION_HANDLER = "user.invalidate_profile"


def registration_handlers(events: EventRegistry, outbox: EventOutbox) -> HandlerRegistry:
    """`auth.user_registered` creates the user's profile and publishes
    `user.profile_created`, both in the inbox's transaction (`ctx.session`), so the same event
    delivered again finds its inbox row and does nothing: one profile, one event."""
    handlers = HandlerRegistry(events)

    @handlers.handles(UserRegistered, name=REGISTRATION_HANDLER)
    async def create_profile(event: UserRegistered, ctx: MessageContext) -> None:
        try:
            uuid.UUID(event.data.user_id)
        except ValueError:  # no retry can fix the event: straight to the dead letters
            raise PermanentHandlerError(
                f"user_id {event.data.user_id!r} is not a UUID") from None
        created = await ProfileService(ctx.session, outbox).register(
            event.data.user_id, event.data.email)
        if created is None:
            log.info("user %s already has a profile; registration %s changes nothing",
                     event.data.user_id, event.event_id)

    return handlers


def invalidation_handlers(events: EventRegistry, cache: ProfileCache) -> HandlerRegistry:
    """`user.profile_updated` drops the cached profile. Not through the inbox (`once=False`):
    deleting a key twice is harmless, and with in-process caches every instance must run it
    for the same event, which an inbox row shared through the database would prevent."""
    handlers = HandlerRegistry(events)

    async def invalidate(event: ProfileUpdated) -> None:
        await cache.invalidate(event.data.user_id)

    handlers.add(ProfileUpdated, invalidate, name=INVALIDATION_HANDLER, once=False)
    return handlers


class Deferred(Generic[T]):
    """A value the runtime makes at start-up, for handlers built before it: consumers start
    before the service's hooks run, so an early request waits for it instead of failing."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._value: T | None = None
        self._ready = asyncio.Event()
        self._timeout = timeout

    def set(self, value: T) -> None:
        self._value = value
        self._ready.set()

    async def get(self) -> T:
        await asyncio.wait_for(self._ready.wait(), self._timeout)
        assert self._value is not None
        return self._value


def contact_responder(events: EventRegistry, database: Deferred[Database]) -> RequestResponder:
    """Answers `user.get_contact` with `user.contact` (`found=false` for an unknown user).
    Read-only, so answering a redelivered request again is harmless."""
    responder = RequestResponder(events=events)

    @responder.responds(GetContact)
    async def get_contact(request: GetContact) -> Contact:
        async with (await database.get()).session() as session:
            contact = await ProfileService(session).contact(request.data.user_id)
        return request.caused(Contact, contact, key=request.data.user_id)

    return responder
