"""The notification service's settings: the core ones plus the sender and delivery policy."""

from __future__ import annotations

from pydantic import Field, model_validator

from core.config import Settings


class NotificationSettings(Settings):
    """Environment variables, upper-cased (`NOTIFICATION_SENDER`, `DELIVERY_MAX_ATTEMPTS`...)."""

    service_name: str = "notification"
    service_port: int = Field(default=8004, ge=1, le=65535)
    database_url: str = "sqlite+aiosqlite:///./.local/notification.db"

    notification_sender: str = "log"
    """Which `NotificationSender` delivers: `log` (the default), or `package.module:factory`,
    a callable taking these settings (an email or SMS adapter lives there)."""
    contact_timeout: float = Field(default=1.5, gt=0, le=30)
    """How long a handler waits for the user service's `user.contact` reply when it has no
    copy of the user's contact details; after that the notification waits for the profile."""

    delivery_poll_interval: float = Field(default=2.0, gt=0, le=300)
    """How often the delivery task looks for due retries when nothing wakes it."""
    delivery_batch_size: int = Field(default=50, ge=1, le=1000)
    delivery_concurrency: int = Field(default=4, ge=1, le=100)
    """Sends in flight at once: a slow mail server is waited on by at most this many."""
    delivery_send_timeout: float = Field(default=10.0, gt=0, le=300)
    delivery_max_attempts: int = Field(default=5, ge=1, le=100)
    delivery_retry_delay: float = Field(default=5.0, ge=0, le=3600)
    """Delay before the first retry; doubling after each failure up to the maximum."""
    delivery_retry_max_delay: float = Field(default=600.0, ge=0, le=86400)
    delivery_lease: float = Field(default=120.0, gt=0, le=86400)
    """A claimed notification whose instance died mid-send is tried again after this."""

    @model_validator(mode="after")
    def _lease_outlasts_a_send(self) -> NotificationSettings:
        if self.delivery_lease <= self.delivery_send_timeout:
            raise ValueError(
                f"DELIVERY_LEASE ({self.delivery_lease:g}s) must exceed DELIVERY_SEND_TIMEOUT "
                f"({self.delivery_send_timeout:g}s): a send still running must keep its claim")
        return self
