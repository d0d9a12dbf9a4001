"""The service's copy of users' contact details, and asking the user service for a missing one.

The copy is fed by `user.events`; on its own it can lag: events on different topics are not
ordered, so `driver.registered` may arrive before `user.profile_created`. A handler that finds
no copy asks the user service over Kafka (`user.get_contact` on `user.requests`) with a short
timeout, and otherwise lets the notification wait for the profile event.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import utcnow
from core.messaging import BaseEvent, MessagingError
from core.runtime import RuntimeKey
from services.notification.clock import db_now
from services.notification.events import (
    USER_REQUESTS,
    GetContact,
    GetContactData,
    ProfileData,
    UserContact,
)
from services.notification.models import Contact, DeliveryStatus, Notification
from services.notification.senders import ContactDetails

log = logging.getLogger(__name__)


class Requester(Protocol):
    """Request-reply over Kafka (`core.messaging.request_reply.RequestReplyClient`)."""

    async def send_request(self, topic: str, request: BaseEvent[Any], timeout: float, *,
                           key: str | None = None) -> BaseEvent[Any]: ...


class ContactBook:
    """Reads and writes the contact copy in the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        dialect = session.get_bind().dialect.name
        self._dialect = dialect
        self._insert = pg_insert if dialect == "postgresql" else sqlite_insert

    async def get(self, user_id: str) -> ContactDetails | None:
        row = await self.session.get(Contact, user_id)
        return None if row is None else _details(row)

    async def apply_profile(self, data: ProfileData, at: datetime) -> bool:
        """Take the profile of an event timestamped `at`, unless the copy already reflects a
        later one (an older event, replayed or overtaken, changes nothing); then the user's
        notifications that waited for a contact become due. True if the copy changed."""
        now = utcnow()
        values = {"email": data.email, "display_name": data.display_name, "phone": data.phone,
                  "source_at": at, "updated_at": now}
        insert = self._insert(Contact).values(user_id=data.user_id, created_at=now, **values)
        upsert = insert.on_conflict_do_update(
            index_elements=[Contact.user_id], set_=values,
            where=Contact.source_at.is_(None) | (Contact.source_at <= insert.excluded.source_at))
        applied = bool((await self.session.execute(upsert)).rowcount)  # type: ignore[attr-defined]
        if applied:
            await self._release(data.user_id)
        return applied

    async def remember(self, details: ContactDetails) -> None:
        """Keep details the user service replied with, unless an event got here first; any
        later profile event supersedes them (their `source_at` is unknown)."""
        now = utcnow()
        await self.session.execute(self._insert(Contact).values(
            user_id=details.user_id, email=details.email, display_name=details.display_name,
            phone=details.phone, source_at=None, created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=[Contact.user_id]))

    async def _release(self, user_id: str) -> int:
        result = await self.session.execute(
            update(Notification)
            .where(Notification.user_id == user_id,
                   Notification.delivery_status == DeliveryStatus.AWAITING_CONTACT)
            .values(delivery_status=DeliveryStatus.PENDING,
                    next_attempt_at=db_now(self._dialect)))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def source_at(self, user_id: str) -> datetime | None:
        """When the copy's source event happened (for tools and tests)."""
        found: datetime | None = await self.session.scalar(
            select(Contact.source_at).where(Contact.user_id == user_id))
        return found


class ContactDirectory:
    """Asks the user service for a user's contact details. Safe for concurrent use."""

    def __init__(self, requester: Requester | None, timeout: float) -> None:
        self.requester = requester
        self.timeout = timeout

    async def ask(self, user_id: str, cause: BaseEvent[Any]) -> ContactDetails | None:
        """The details, or None when the user service does not know the user, fails, or does
        not answer within the timeout (the caller carries on without them)."""
        if self.requester is None:
            return None
        request = cause.caused(GetContact, GetContactData(user_id=user_id), key=user_id)
        try:
            reply = await self.requester.send_request(USER_REQUESTS, request, self.timeout,
                                                      key=user_id)
        except MessagingError as exc:  # timeout, responder error, broker refusal, shutdown
            log.info("no contact for user %s from the user service: %s", user_id, exc)
            return None
        if not isinstance(reply, UserContact) or reply.data.user_id != user_id:
            log.warning("unexpected reply to user.get_contact for %s: %r", user_id, reply)
            return None
        data = reply.data
        if not data.found or not data.email:
            return None
        return ContactDetails(user_id, data.email, data.display_name or data.email, data.phone)


def _details(row: Contact) -> ContactDetails:
    return ContactDetails(row.user_id, row.email, row.display_name, row.phone)


DIRECTORY = RuntimeKey("contact_directory", ContactDirectory)
"""Asks the user service for contact details the copy lacks."""
