"""HTTP routes: the caller's own notifications (`notifications:read`), and marking one read."""

# No `from __future__ import annotations`: FastAPI must see the annotations as objects.

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from core.bases import Envelope, ListEnvelope, PageMeta, PageRequest, error_responses, max_page
from core.security import CurrentUser, require_permission
from services.notification.deps import NotificationsDep
from services.notification.models import Notification
from services.notification.schemas import NotificationPublic

MAX_PAGE_SIZE = 100
READ = "notifications:read"

router = APIRouter(prefix="/notifications", tags=["notifications"],
                   dependencies=[Depends(require_permission(READ))])


def public(notification: Notification) -> NotificationPublic:
    return NotificationPublic.model_validate(notification, from_attributes=True)


@router.get("", response_model=ListEnvelope[NotificationPublic],
            summary="List the caller's notifications, newest first",
            responses=error_responses(401, 403, 422, 500))
async def list_notifications(
    principal: CurrentUser,
    service: NotificationsDep,
    page: Annotated[int, Query(ge=1, le=max_page(MAX_PAGE_SIZE),
                               description="1-based page number.")] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")] = 20,
    unread: Annotated[bool, Query(description="Only the ones not marked read.")] = False,
) -> ListEnvelope[NotificationPublic]:
    found = await service.list_for(principal.subject, PageRequest.of(page, size), unread=unread)
    return ListEnvelope[NotificationPublic](
        data=[public(n) for n in found.items],
        meta=PageMeta(page=found.page, size=found.size, total=found.total, pages=found.pages))


@router.post("/{notification_id}/read", response_model=Envelope[NotificationPublic],
             summary="Mark one of the caller's notifications read",
             description="Another user's notification answers 404, like a missing one: its "
                         "id reveals nothing.",
             responses=error_responses(401, 403, 404, 422, 500))
async def mark_read(notification_id: uuid.UUID, principal: CurrentUser,
                    service: NotificationsDep) -> Envelope[NotificationPublic]:
    notification = await service.mark_read(notification_id, principal.subject)
    return Envelope[NotificationPublic](data=public(notification),
                                        message="Notification marked read")
