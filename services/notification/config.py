"""The notification service's settings: the core ones plus the sender and delivery policy."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from core.config import Settings


class NotificationSettings(Settings):
    """Environment variables, upper-cased (`NOTIFICATION_SENDER`, `DELIVERY_MAX_ATTEMPTS`...)."""

    service_name: str = "notification"
    service_port: int = Field(default=8004, ge=1, le=65535)

    notification_sender: str = "log"
    """Which `NotificationSender` delivers: `log` (the default), or `package.module:factory`,
    a callable taking these settings (an email or SMS adapter lives there)."""
    contact_timeout: float = Field(default=1.5, gt=0, le=30)
    """How long a handler waits for the user service's `user.contact` reply when it has no
    copy of the user's contact details; after that the notification waits for the profile."""

    delivery_poll_interval: float = Field(default=2.0, gt=0, le=300)
    """How often the delivery task looks for due retries when nothing wakes it."""
    delivery_batch_size: int = Field(default=40, ge=1, le=1000)
    """Notifications claimed at once, under one lease (see `lease_problem`)."""
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
    def _lease_outlasts_a_batch(self) -> NotificationSettings:
        problem = lease_problem(self.delivery_batch_size, self.delivery_concurrency,
                                self.delivery_send_timeout, self.delivery_lease)
        if problem:
            raise ValueError(problem)
        return self


def lease_problem(batch_size: int, concurrency: int, send_timeout: float,
                  lease: float) -> str | None:
    """Why a lease cannot cover a batch claimed under it, or None if it can.

    A batch is sent `concurrency` at a time, each send cut off at `send_timeout`: its last
    send may end `ceil(batch_size / concurrency) * send_timeout` after the claim. A lease
    that ends sooner hands notifications still being sent to another instance, which sends
    them again."""
    rounds = math.ceil(batch_size / concurrency)
    if rounds * send_timeout < lease:
        return None
    return (f"DELIVERY_LEASE ({lease:g}s) must exceed the time a claimed batch may take to "
            f"send: ceil(DELIVERY_BATCH_SIZE {batch_size} / DELIVERY_CONCURRENCY "
            f"{concurrency}) = {rounds} rounds x DELIVERY_SEND_TIMEOUT {send_timeout:g}s = "
            f"{rounds * send_timeout:g}s; raise the lease or the concurrency, or lower the "
            f"batch size or the send timeout")
