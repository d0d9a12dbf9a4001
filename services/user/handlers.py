"""What the user service does with events and requests: profiles for new users (from
`auth.events`, through the inbox), cache invalidation (from its own `user.events`), and the
answers to `user.get_contact` (on `user.requests`).

Declared at import; what a handler uses of the running service it takes from
`ctx.runtime` when it runs (the outbox writer, the profile cache, the database). Three
registries, one per subscription (each has its topic, and the invalidations may have their
own group: main.py), over the one event registry the service decodes with (`events`).
"""

from __future__ import annotations

import logging
import uuid

from core.app import DATABASE, OUTBOX_WRITER
from core.messaging import (
    EventRegistry,
    HandlerRegistry,
    MessageContext,
    PermanentHandlerError,
    RequestResponder,
)
from services.user.cache import CACHE
from services.user.events import Contact, GetContact, ProfileUpdated, UserRegistered
from services.user.rules import ProfileService

log = logging.getLogger(__name__)

REGISTRATION_HANDLER = "user.create_profile"
INVALIDATION_HANDLER = "user.invalidate_profile"

events = EventRegistry()
registrations = HandlerRegistry(events)
invalidations = HandlerRegistry(events)
contacts = RequestResponder(events=events)


@registrations.handles(UserRegistered, name=REGISTRATION_HANDLER)
async def create_profile(event: UserRegistered, ctx: MessageContext) -> None:
    """`auth.user_registered` creates the user's profile and publishes
    `user.profile_created`, both in the inbox's transaction (`ctx.session`), so the same
    event delivered again finds its inbox row and does nothing: one profile, one event."""
    try:
        uuid.UUID(event.data.user_id)
    except ValueError:  # no retry can fix the event: straight to the dead letters
        raise PermanentHandlerError(f"user_id {event.data.user_id!r} is not a UUID") from None
    created = await ProfileService(ctx.session, ctx.runtime[OUTBOX_WRITER]).register(
        event.data.user_id, event.data.email)
    if created is None:
        log.info("user %s already has a profile; registration %s changes nothing",
                 event.data.user_id, event.event_id)


@invalidations.handles(ProfileUpdated, name=INVALIDATION_HANDLER, once=False)
async def invalidate_profile(event: ProfileUpdated, ctx: MessageContext) -> None:
    """`user.profile_updated` drops the cached profile. Not through the inbox (`once=False`):
    deleting a key twice is harmless, and with in-process caches every instance must run it
    for the same event, which an inbox row shared through the database would prevent."""
    await ctx.runtime[CACHE].invalidate(event.data.user_id)


@contacts.responds(GetContact)
async def get_contact(request: GetContact, ctx: MessageContext) -> Contact:
    """Answers `user.get_contact` with `user.contact` (`found=false` for an unknown user).
    Read-only, so answering a redelivered request again is harmless."""
    async with ctx.runtime[DATABASE].session() as session:
        contact = await ProfileService(session).contact(request.data.user_id)
    return request.caused(Contact, contact, key=request.data.user_id)
