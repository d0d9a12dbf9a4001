"""Domain helpers shared by the user service's in-process tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.messaging import BaseEvent


class RecordingOutbox:
    """An EventOutbox that keeps what it was given (the real one writes a row)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, BaseEvent[Any]]] = []

    async def add(self, session: AsyncSession, topic: str, event: BaseEvent[Any], *,
                  key: str | None = None) -> None:
        self.events.append((topic, event))
