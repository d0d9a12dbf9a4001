"""The sample service's tables: widgets, plus its own outbox and inbox."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.db.models import ServiceBase, SoftDeleteMixin, TimestampMixin, UUIDPrimaryKeyMixin
from core.messaging import messaging_tables


class Base(ServiceBase, DeclarativeBase):
    pass


class Widget(UUIDPrimaryKeyMixin, TimestampMixin, SoftDeleteMixin, Base):
    __tablename__ = "widgets"

    name: Mapped[str] = mapped_column(String(100))
    sku: Mapped[str] = mapped_column(String(32), unique=True)
    price_cents: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    note: Mapped[str | None] = mapped_column(String(200))


outbox = messaging_tables(Base.metadata).outbox
