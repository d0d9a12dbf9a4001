"""The notification service's route dependencies, as `Annotated` aliases over the request's
session and the service's outbox writer."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from core.bases import OutboxDep, SessionDep
from services.notification.rules import NotificationService


async def get_notifications(session: SessionDep, outbox: OutboxDep) -> NotificationService:
    """`async def` though it never awaits: FastAPI runs a plain `def` dependency in a
    thread."""
    return NotificationService(session, outbox)


NotificationsDep = Annotated[NotificationService, Depends(get_notifications)]
"""The rules over the request's transaction."""
