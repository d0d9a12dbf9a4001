"""The vocabulary of core.bases: the type parameters and the ports a service is built from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeAlias, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

from core.messaging.events import BaseEvent

ModelT = TypeVar("ModelT", bound=DeclarativeBase)
"""A mapped ORM class of the service."""
CreateT = TypeVar("CreateT", bound=BaseModel)
"""The pydantic schema a client sends to create a resource."""
UpdateT = TypeVar("UpdateT", bound=BaseModel)
"""The pydantic schema of a partial update; only the fields the client sent are applied."""
PublicT = TypeVar("PublicT", bound=BaseModel)
"""The pydantic schema a client receives; never the stored model itself."""


class EventOutbox(Protocol):
    """Where a service writes the events its state changes cause.

    `add` must write through `session`, inside its open transaction, and do nothing else: the
    event is then published if and only if that transaction commits (the relay does the
    publishing). `key` is the Kafka key; None lets the outbox use `event.partition_key()`.
    Implemented by `core.messaging.outbox.OutboxWriter`.
    """

    async def add(
        self, session: AsyncSession, topic: str, event: BaseEvent[Any], *, key: str | None = None
    ) -> None: ...


Permission: TypeAlias = Callable[..., Any]
"""A FastAPI dependency guarding an action: it returns to allow and raises ForbiddenError (or
UnauthorizedError) to deny. It may declare its own dependencies, e.g. the current user."""
