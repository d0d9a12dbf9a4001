"""Notification rules: creating one (with its `notification.created` event), listing the
caller's own, and marking one read."""

from __future__ import annotations

import uuid
from typing import Any

from core.bases import BaseRepository, BaseService, NotFoundError, Page, PageRequest
from core.db import utcnow
from core.messaging import BaseEvent
from services.notification.events import (
    NOTIFICATION_EVENTS,
    NotificationCreated,
    NotificationCreatedData,
)
from services.notification.models import DeliveryStatus, Notification
from services.notification.schemas import NotificationChange, NotificationDraft


class NotificationRepository(BaseRepository[Notification]):
    model = Notification
    sort_fields = frozenset({"created_at", "id"})
    default_sort = ("-created_at", "-id")


class NotificationService(BaseService[Notification, NotificationDraft, NotificationChange]):
    """Every query is scoped to one user: a notification of someone else is "not found",
    so its id reveals nothing (not even that it exists)."""

    repository_class = NotificationRepository
    events_topic = NOTIFICATION_EVENTS

    async def notify(self, draft: NotificationDraft, cause: BaseEvent[Any]) -> Notification:
        """Create the notification and its `notification.created` event, in the caller's
        transaction; delivery happens after it commits (see delivery.py)."""
        due = draft.contact_known
        notification = await self.repository.create({
            **draft.model_dump(exclude={"contact_known"}),
            "correlation_id": cause.correlation_id or str(cause.event_id),  # as caused() does
            "delivery_status": DeliveryStatus.PENDING if due else DeliveryStatus.AWAITING_CONTACT,
            "next_attempt_at": utcnow() if due else None,
        })
        await self.publish_event(cause.caused(
            NotificationCreated,
            NotificationCreatedData(notification_id=str(notification.id),
                                    user_id=notification.user_id, kind=notification.kind),
            key=notification.user_id))
        return notification

    async def list_for(self, user_id: str, page: PageRequest, *,
                       unread: bool = False) -> Page[Notification]:
        where = [Notification.user_id == user_id]
        if unread:
            where.append(Notification.read_at.is_(None))
        return await self.repository.list(page, where=where)

    async def mark_read(self, notification_id: uuid.UUID, user_id: str) -> Notification:
        """Idempotent: a notification read before keeps its first `read_at`."""
        notification = await self.repository.get(notification_id)
        if notification is None or notification.user_id != user_id:
            raise NotFoundError(f"Notification {notification_id} not found")
        if notification.read_at is None:
            await self.repository.update(notification, {"read_at": utcnow()})
        return notification
