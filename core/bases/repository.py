"""`BaseRepository`: the queries every resource needs, over one `AsyncSession`.

Declare the model and what clients may filter and sort on::

    class WidgetRepository(BaseRepository[Widget]):
        model = Widget
        filter_fields = frozenset({"status", "price_cents", "name"})
        sort_fields = frozenset({"created_at", "price_cents", "name"})
        default_sort = ("-created_at",)

The repository never commits: it flushes, so constraint violations surface here as typed
errors (a unique clash is a ConflictError), and the caller's transaction decides the rest.
A violation aborts that transaction; do not keep using the session after one.
Soft-deleted rows (models with `SoftDeleteMixin`) are invisible unless asked for.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic

from sqlalchemy import ColumnElement, Select, func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.bases.bounds import out_of_range
from core.bases.errors import (
    ConfigurationError,
    FieldError,
    NotFoundError,
    ValidationError,
    from_integrity_error,
)
from core.bases.filters import (
    FilterInput,
    QueryFilters,
    coerce,
    meant_as_filters,
    order_clauses,
    parse_filters,
    where_clauses,
)
from core.bases.pagination import Page, PageRequest
from core.bases.types import ModelT
from core.db.models import is_soft_deletable, per_model
from core.db.types import utcnow


class BaseRepository(Generic[ModelT]):
    """CRUD, pagination, filtering and soft delete for one model. One instance per session."""

    model: type[ModelT]
    filter_fields: ClassVar[frozenset[str]] = frozenset()
    sort_fields: ClassVar[frozenset[str]] = frozenset()
    default_sort: ClassVar[tuple[str, ...]] = ()

    def __init__(self, session: AsyncSession, model: type[ModelT] | None = None) -> None:
        if model is not None:
            self.model = model
        if getattr(self, "model", None) is None:
            raise ConfigurationError(f"{type(self).__name__} needs a model")
        self.session = session

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = cls.__dict__.get("model")
        if model is not None:  # fail at import, not on the first request
            columns = set(inspect(model).column_attrs.keys())
            wrong = (cls.filter_fields | cls.sort_fields | {
                k.lstrip("+-") for k in cls.default_sort}) - columns
            if wrong:
                raise ConfigurationError(
                    f"{cls.__name__}: not columns of {model.__name__}: {sorted(wrong)}")

    @property
    def resource(self) -> str:
        """How messages name one row, e.g. "Widget"."""
        return self.model.__name__

    @property
    def soft_deletes(self) -> bool:
        return is_soft_deletable(self.model)

    # --- reads ------------------------------------------------------------------------------

    async def get(self, id: Any, *, include_deleted: bool = False) -> ModelT | None:
        """The row with primary key `id`, or None (also for ids of the wrong shape)."""
        try:
            key = self._key(id)
        except ValueError:
            return None
        found = await self.session.get(self.model, key)
        if found is None or (not include_deleted and self._deleted(found)):
            return None
        return found

    async def get_or_raise(self, id: Any, *, include_deleted: bool = False) -> ModelT:
        found = await self.get(id, include_deleted=include_deleted)
        if found is None:
            raise NotFoundError(f"{self.resource} {id} not found")
        return found

    async def list(
        self,
        page: PageRequest | None = None,
        *,
        filters: FilterInput = (),
        sort: str | Sequence[str] | None = None,
        where: Sequence[ColumnElement[bool]] = (),
        include_deleted: bool = False,
        only_deleted: bool = False,
    ) -> Page[ModelT]:
        """One page of rows matching `filters` (allowed fields only; `QueryFilters` from an HTTP
        query drop the parameters that are not about this model) and `where` (trusted SQL from
        the service), in `sort` order, with the total count over all pages."""
        page = page or PageRequest()
        if isinstance(filters, QueryFilters):
            filters = meant_as_filters(self.model, filters, self.filter_fields)
        conditions = [
            *where_clauses(self.model, parse_filters(filters), self.filter_fields),
            *where,
            *self._visibility(include_deleted, only_deleted),
        ]
        order = order_clauses(self.model, sort, self.sort_fields, self.default_sort)
        total = await self.session.scalar(
            select(func.count()).select_from(self.model).where(*conditions))
        rows = await self.session.scalars(
            self._select().where(*conditions).order_by(*order)
            .offset(page.offset).limit(page.limit))
        return Page(list(rows), total or 0, page)

    async def exists(self, *, include_deleted: bool = True, **equals: Any) -> bool:
        """Whether a row has these column values; for checks in validation hooks."""
        conditions = [getattr(self.model, k) == coerce(self.model, k, v)
                      for k, v in equals.items()]
        found = await self.session.scalar(
            select(func.count()).select_from(self.model)
            .where(*conditions, *self._visibility(include_deleted, False)))
        return bool(found)

    # --- writes -----------------------------------------------------------------------------

    async def create(self, values: Mapping[str, Any]) -> ModelT:
        self._check_values(values)
        obj = self.model(**values)
        self.session.add(obj)
        await self._flush()
        return obj

    async def bulk_create(self, rows: Sequence[Mapping[str, Any]]) -> builtins.list[ModelT]:
        """Insert many rows in one flush: all or none."""
        for values in rows:
            self._check_values(values)
        objs = [self.model(**values) for values in rows]
        self.session.add_all(objs)
        await self._flush()
        return objs

    async def update(self, obj: ModelT, values: Mapping[str, Any]) -> ModelT:
        """Apply the given fields only (a partial update)."""
        self._check_values(values)
        columns = inspect(self.model).column_attrs
        unknown = set(values) - set(columns.keys())
        if unknown:
            raise ConfigurationError(f"{self.resource} has no columns {sorted(unknown)}")
        for key, value in values.items():
            setattr(obj, key, value)
        await self._flush()
        return obj

    async def soft_delete(self, obj: ModelT) -> ModelT:
        self._require_soft_delete()
        if not self._deleted(obj):
            obj.deleted_at = utcnow()  # type: ignore[attr-defined]
            await self._flush()
        return obj

    async def restore(self, obj: ModelT) -> ModelT:
        self._require_soft_delete()
        if self._deleted(obj):
            obj.deleted_at = None  # type: ignore[attr-defined]
            await self._flush()
        return obj

    async def delete(self, obj: ModelT) -> None:
        """Remove the row for good."""
        await self.session.delete(obj)
        await self._flush()

    # --- internals --------------------------------------------------------------------------

    def _select(self) -> Select[Any]:
        return select(self.model)

    def _visibility(
        self, include_deleted: bool, only_deleted: bool
    ) -> builtins.list[ColumnElement[bool]]:
        if not self.soft_deletes:
            return []
        deleted_at = self.model.deleted_at  # type: ignore[attr-defined]
        if only_deleted:
            return [deleted_at.is_not(None)]
        return [] if include_deleted else [deleted_at.is_(None)]

    def _deleted(self, obj: ModelT) -> bool:
        return self.soft_deletes and getattr(obj, "deleted_at", None) is not None

    def _require_soft_delete(self) -> None:
        if not self.soft_deletes:
            raise ConfigurationError(f"{self.resource} has no SoftDeleteMixin")

    def _key(self, id: Any) -> Any:
        key = _primary_key(self.model)
        if key is None:
            return id  # composite keys: the caller passes the tuple
        return coerce(self.model, key, id)

    def _check_values(self, values: Mapping[str, Any]) -> None:
        """A clear 422 for values the columns cannot take, instead of what the database or
        its driver would do with them: a NOT NULL violation, an integer overflow (a 500)."""
        not_null = _not_nullable(self.model)
        problems = [
            FieldError(key, "may not be null", "not_null", "body")
            for key, value in values.items() if value is None and key in not_null
        ]
        problems += out_of_range(self.model, values)
        if problems:
            message = ("A required value is missing" if all(p.code == "not_null" for p in problems)
                       else "A value does not fit its field")
            raise ValidationError(message, fields=problems)

    async def _flush(self) -> None:
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise from_integrity_error(exc, self.resource.lower()) from exc


# Facts of a mapped model, read on every request: cached per model (a mapping does not change
# once configured).


@per_model
def _primary_key(model: type[Any]) -> str | None:
    """The attribute of a single-column primary key; None for a composite one."""
    mapper = inspect(model)
    if len(mapper.primary_key) != 1:
        return None
    return str(mapper.get_property_by_column(mapper.primary_key[0]).key)


@per_model
def _not_nullable(model: type[Any]) -> frozenset[str]:
    return frozenset(key for key, prop in inspect(model).column_attrs.items()
                     if not prop.columns[0].nullable)
