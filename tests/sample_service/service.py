"""Widget rules: the repository's allowed filters and sorts, validation, events."""

from __future__ import annotations

from core.bases import BaseRepository, BaseService, ConflictError, ValidationError
from tests.sample_service.events import WidgetCreated, WidgetData, WidgetDeleted
from tests.sample_service.models import Widget
from tests.sample_service.schemas import WidgetCreate, WidgetUpdate

MAX_PRICE_CENTS = 1_000_000


class WidgetRepository(BaseRepository[Widget]):
    model = Widget
    filter_fields = frozenset({"name", "sku", "status", "price_cents", "created_at"})
    sort_fields = frozenset({"name", "price_cents", "created_at"})
    default_sort = ("-created_at",)


class WidgetService(BaseService[Widget, WidgetCreate, WidgetUpdate]):
    repository_class = WidgetRepository
    events_topic = "widget.events"

    async def _validate_create(self, data: WidgetCreate) -> None:
        if data.price_cents > MAX_PRICE_CENTS:
            raise ValidationError.for_field("price_cents", f"at most {MAX_PRICE_CENTS}")

    async def _validate_update(self, current: Widget, data: WidgetUpdate) -> None:
        if "sku" in data.model_fields_set and current.status == "active":
            raise ConflictError("the sku of an active widget cannot change")

    async def _validate_delete(self, current: Widget) -> None:
        if current.status == "active":
            raise ConflictError("retire an active widget before deleting it")

    async def _after_create(self, widget: Widget) -> None:
        await self.publish_event(WidgetCreated(aggregate_id=str(widget.id), data=_data(widget)))

    async def _after_delete(self, widget: Widget) -> None:
        await self.publish_event(WidgetDeleted(aggregate_id=str(widget.id), data=_data(widget)))


def _data(widget: Widget) -> WidgetData:
    return WidgetData(widget_id=str(widget.id), sku=widget.sku, price_cents=widget.price_cents)
