"""The user service's tables: one profile per user, plus its outbox and inbox."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.db import ServiceBase, SoftDeleteMixin, TimestampMixin
from core.messaging import messaging_tables

EMAIL_LENGTH = 320
DISPLAY_NAME_LENGTH = 100
PHONE_LENGTH = 16  # "+" and at most 15 digits (E.164)
URL_LENGTH = 2048


class Base(ServiceBase, DeclarativeBase):
    pass


class Profile(TimestampMixin, SoftDeleteMixin, Base):
    """A user's profile. Its id is the user's id in auth (the token's subject), not one of
    ours: the profile exists because auth said the user registered."""

    __tablename__ = "profiles"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, sort_order=-100)
    email: Mapped[str] = mapped_column(String(EMAIL_LENGTH), index=True)
    """Copied from auth's event; auth owns it (it is not unique here: auth enforces that)."""
    display_name: Mapped[str] = mapped_column(String(DISPLAY_NAME_LENGTH), index=True)
    phone: Mapped[str | None] = mapped_column(String(PHONE_LENGTH))
    avatar_url: Mapped[str | None] = mapped_column(String(URL_LENGTH))
    preferences: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """`schemas.Preferences` as JSON; replaced whole on change (JSON is not change-tracked)."""


outbox = messaging_tables(Base.metadata).outbox
