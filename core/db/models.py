"""A service's own declarative base, and the column mixins its models share.

Each service declares its root once; the mixin gives it a fresh `MetaData` with the naming
convention, so no table, constraint or migration is ever shared between services::

    class Base(ServiceBase, DeclarativeBase):
        pass

    class User(UUIDPrimaryKeyMixin, TimestampMixin, SoftDeleteMixin, Base):
        __tablename__ = "users"
        email: Mapped[str] = mapped_column(String(255), unique=True)

    outbox_table(Base.metadata)   # the service's outbox lives in its own history too

Constraint names come from the convention, not from the database, so Alembic can drop or
alter them by name later, on SQLite (batch mode) and PostgreSQL alike.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from sqlalchemy import MetaData, String, Uuid, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.db.types import UtcDateTime, utcnow, uuid7

T = TypeVar("T")

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NOW = text("CURRENT_TIMESTAMP")
"""Server default that renders the same on SQLite and PostgreSQL (and in migrations)."""


def service_metadata(schema: str | None = None) -> MetaData:
    """A fresh MetaData with the naming convention; `schema` isolates a service on a shared
    PostgreSQL database."""
    return MetaData(naming_convention=NAMING_CONVENTION, schema=schema)


def table_key(metadata: MetaData, name: str) -> str:
    """The key of table `name` in `metadata.tables`: a table takes its metadata's schema,
    and SQLAlchemy keys it `schema.name`, so a lookup by the bare name would miss it."""
    return f"{metadata.schema}.{name}" if metadata.schema else name


class ServiceBase:
    """Mixin for a service's declarative root: `class Base(ServiceBase, DeclarativeBase)`.

    The root gets its own `service_metadata()` (unless it sets `metadata` itself) and maps
    `datetime` to `UtcDateTime` and `uuid.UUID` to `Uuid`. It must come before
    `DeclarativeBase` so the metadata exists when SQLAlchemy builds the registry.
    """

    metadata: ClassVar[MetaData]
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime(), uuid.UUID: Uuid()}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if DeclarativeBase in cls.__bases__:
            if "registry" in cls.__dict__:  # DeclarativeBase ran first: wrong base order
                raise TypeError(f"{cls.__name__}: list ServiceBase before DeclarativeBase")
            if "metadata" not in cls.__dict__:
                cls.metadata = service_metadata()
        super().__init_subclass__(**kwargs)


class UUIDPrimaryKeyMixin:
    """`id`: a UUID (v7, time-ordered) made in Python, so it is known before the INSERT."""

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid7,
                                          sort_order=-100)


class StringPrimaryKeyMixin:
    """`id`: a string key (a UUID v7 text by default), for ids other systems hand out."""

    id: Mapped[str] = mapped_column(String(64), primary_key=True,
                                    default=lambda: str(uuid7()), sort_order=-100)


class TimestampMixin:
    """`created_at` / `updated_at`, set in Python (so an async session never has to reload
    them) with a server default for rows inserted by hand."""

    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime(), default=utcnow, server_default=NOW, nullable=False,
        sort_order=100)
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime(), default=utcnow, onupdate=utcnow, server_default=NOW,
        nullable=False, sort_order=100)


class SoftDeleteMixin:
    """`deleted_at`: set instead of deleting the row, so it can be restored; repositories
    hide such rows unless asked."""

    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None,
                                                        index=True, sort_order=100)

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


def is_soft_deletable(model: type[Any]) -> bool:
    return issubclass(model, SoftDeleteMixin)


def per_model(fn: Callable[[type[Any]], T]) -> Callable[[type[Any]], T]:
    """Cache a fact of a mapped model (its mapping does not change once configured) that a
    request would otherwise recompute from the mapper every time."""
    cache: dict[type[Any], T] = {}

    @functools.wraps(fn)
    def cached(model: type[Any]) -> T:
        try:
            return cache[model]
        except KeyError:
            found = cache[model] = fn(model)
            return found

    return cached


def per_model_field(fn: Callable[[type[Any], str], T]) -> Callable[[type[Any], str], T]:
    """`per_model` for a fact of one field of a model."""
    cache: dict[tuple[type[Any], str], T] = {}

    @functools.wraps(fn)
    def cached(model: type[Any], field: str) -> T:
        try:
            return cache[model, field]
        except KeyError:
            found = cache[model, field] = fn(model, field)
            return found

    return cached
