"""`BaseService`: business operations on one resource, inside one session (one transaction).

A subclass names its repository, optionally its events topic, and overrides hooks::

    class WidgetService(BaseService[Widget, WidgetCreate, WidgetUpdate]):
        repository_class = WidgetRepository
        events_topic = "widget.events"

        async def _validate_create(self, data: WidgetCreate) -> None:
            if data.price_cents > 1_000_000:
                raise ValidationError.for_field("price_cents", "too expensive")

        async def _after_create(self, widget: Widget) -> None:
            await self.publish_event(WidgetCreated(aggregate_id=str(widget.id), data=...))

`_validate_*` run before the change and raise ValidationError / ConflictError to refuse it;
`_after_*` run after it is flushed (ids and defaults are known) and are the place to publish
events. Everything, state and outbox rows, commits together when the caller's transaction
does, or not at all.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic

from sqlalchemy.ext.asyncio import AsyncSession

from core.bases.errors import ConfigurationError
from core.bases.filters import FilterInput
from core.bases.pagination import Page, PageRequest
from core.bases.repository import BaseRepository
from core.bases.types import CreateT, EventOutbox, ModelT, UpdateT
from core.messaging.events import BaseEvent

__all__ = ["BaseService", "EventOutbox"]


class BaseService(Generic[ModelT, CreateT, UpdateT]):
    """CRUD use cases with validation hooks and transactional event publishing.

    Not shared between requests or tasks: it holds the caller's session.
    """

    repository_class: ClassVar[type[BaseRepository[Any]]]
    events_topic: ClassVar[str | None] = None

    def __init__(
        self,
        session: AsyncSession,
        outbox: EventOutbox | None = None,
        *,
        repository: BaseRepository[ModelT] | None = None,
    ) -> None:
        self.session = session
        self.outbox = outbox
        if repository is None:
            if getattr(type(self), "repository_class", None) is None:
                raise ConfigurationError(f"{type(self).__name__} needs a repository_class")
            repository = self.repository_class(session)
        self.repository: BaseRepository[ModelT] = repository

    # --- use cases --------------------------------------------------------------------------

    async def create(self, data: CreateT) -> ModelT:
        await self._validate_create(data)
        obj = await self.repository.create(self._create_values(data))
        await self._after_create(obj)
        return obj

    async def get(self, id: Any, *, include_deleted: bool = False) -> ModelT:
        """The resource, or NotFoundError (soft-deleted ones count as missing by default)."""
        return await self.repository.get_or_raise(id, include_deleted=include_deleted)

    async def list(
        self,
        page: PageRequest | None = None,
        *,
        filters: FilterInput = (),
        sort: str | list[str] | None = None,
        include_deleted: bool = False,
        only_deleted: bool = False,
    ) -> Page[ModelT]:
        return await self.repository.list(page, filters=filters, sort=sort,
                                          include_deleted=include_deleted,
                                          only_deleted=only_deleted)

    async def update(self, id: Any, data: UpdateT) -> ModelT:
        """Apply only the fields the client sent."""
        obj = await self.get(id)
        await self._validate_update(obj, data)
        changes = self._update_values(data)
        if changes:
            await self.repository.update(obj, changes)
        await self._after_update(obj, changes)
        return obj

    async def delete(self, id: Any) -> ModelT | None:
        """Soft delete when the model supports it (returns the row), else delete for good."""
        obj = await self.get(id)
        await self._validate_delete(obj)
        if self.repository.soft_deletes:
            await self.repository.soft_delete(obj)
            await self._after_delete(obj)
            return obj
        await self.repository.delete(obj)
        await self._after_delete(obj)
        return None

    async def restore(self, id: Any) -> ModelT:
        """Undo a soft delete; restoring a live resource changes nothing."""
        obj = await self.get(id, include_deleted=True)
        await self._validate_restore(obj)
        await self.repository.restore(obj)
        await self._after_restore(obj)
        return obj

    async def purge(self, id: Any) -> None:
        """Delete for good, soft-deleted or not."""
        obj = await self.get(id, include_deleted=True)
        await self._validate_delete(obj)
        await self.repository.delete(obj)
        await self._after_delete(obj)

    async def publish_event(
        self, event: BaseEvent[Any], topic: str | None = None, *, key: str | None = None
    ) -> None:
        """Write `event` to the outbox in this service's transaction: it reaches Kafka if and
        only if the state change commits. `topic` defaults to the class's `events_topic`."""
        if self.outbox is None:
            raise ConfigurationError(
                f"{type(self).__name__} has no outbox: construct it with outbox=OutboxWriter(...)"
                " to publish events")
        target = topic or self.events_topic
        if not target:
            raise ConfigurationError(
                f"{type(self).__name__}.publish_event: no topic (pass one or set events_topic)")
        await self.outbox.add(self.session, target, event, key=key)

    # --- hooks ------------------------------------------------------------------------------

    async def _validate_create(self, data: CreateT) -> None:
        """Refuse a create by raising ValidationError or ConflictError."""

    async def _validate_update(self, current: ModelT, data: UpdateT) -> None:
        """Refuse an update; `data.model_fields_set` says which fields the client sent."""

    async def _validate_delete(self, current: ModelT) -> None:
        """Refuse a delete (soft or hard)."""

    async def _validate_restore(self, current: ModelT) -> None:
        """Refuse a restore."""

    async def _after_create(self, obj: ModelT) -> None:
        """Runs after the insert is flushed; publish events here."""

    async def _after_update(self, obj: ModelT, changes: dict[str, Any]) -> None:
        """Runs after the update is flushed; `changes` is what was applied."""

    async def _after_delete(self, obj: ModelT) -> None:
        """Runs after a soft or hard delete is flushed."""

    async def _after_restore(self, obj: ModelT) -> None:
        """Runs after a restore is flushed."""

    def _create_values(self, data: CreateT) -> dict[str, Any]:
        """Column values from the create schema; override to map or derive fields."""
        return data.model_dump()

    def _update_values(self, data: UpdateT) -> dict[str, Any]:
        """Column values from the fields the client actually sent."""
        return data.model_dump(exclude_unset=True)
