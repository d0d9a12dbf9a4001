"""The notification service's tables: notifications, its copy of users' contact details, and
its outbox, lease and inbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.db import ServiceBase, TimestampMixin, UUIDPrimaryKeyMixin
from core.messaging import messaging_tables


class Base(ServiceBase, DeclarativeBase):
    pass


class DeliveryStatus:
    """Where a notification's delivery stands (`Notification.delivery_status`)."""

    AWAITING_CONTACT = "awaiting_contact"
    """No contact details yet: sent once the user's profile event arrives."""
    PENDING = "pending"
    """Due at `next_attempt_at` (now, or a retry's backoff, or a claim's lease)."""
    SENT = "sent"
    FAILED = "failed"
    """Out of attempts; kept, with the last error, for an operator to look at."""


class Notification(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_user_id_created_at", "user_id", "created_at"),
        Index("ix_notifications_delivery_due", "delivery_status", "next_attempt_at"),
    )

    user_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    read_at: Mapped[datetime | None]
    source_event_id: Mapped[str] = mapped_column(String(36))
    """The event that caused it, for tracing; exactly-once is the inbox's job."""
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    """The user action it is part of: that event's correlation id (the event's own id when it
    names none, as its `notification.created` does); None on rows from before it was kept."""
    delivery_status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.PENDING)
    delivery_attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    claim_token: Mapped[str | None] = mapped_column(String(32))
    """Set by the delivery claim that holds the row; its outcome is recorded only while the
    token is still there (see delivery.py)."""
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]


class Contact(TimestampMixin, Base):
    """The service's own copy of a user's contact details, fed by `user.events` (and by the
    user service's `user.contact` replies); never read from the user service's database."""

    __tablename__ = "contacts"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String)
    display_name: Mapped[str] = mapped_column(String)
    phone: Mapped[str | None] = mapped_column(String)
    source_at: Mapped[datetime | None]
    """The timestamp of the profile event this copy reflects: an event older than it changes
    nothing. None for a copy taken from a reply, which any profile event supersedes."""


outbox = messaging_tables(Base.metadata).outbox
