"""The catalog service's tables: the shop's products (same ids), plus its outbox and inbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.db import ServiceBase, TimestampMixin
from core.messaging import messaging_tables


class Base(ServiceBase, DeclarativeBase):
    pass


class Product(TimestampMixin, Base):
    """A product. Its id is the shop's: clients hold URLs with it and the shop's orders
    point at it, so the backfill copies ids, never makes new ones."""

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True,
                                    sort_order=-100)
    sku: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    price_cents: Mapped[int] = mapped_column(Integer)
    source_updated_at: Mapped[datetime | None] = mapped_column(default=None)
    """The shop's `updated_at` of the row last copied in (None: written here, not copied):
    a copy never overwrites a newer write with an older one."""


outbox = messaging_tables(Base.metadata).outbox
