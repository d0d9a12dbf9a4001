"""The sender port: how a notification leaves the service, and the adapter chosen by settings.

    class EmailSender:                     # an adapter is a class with this one method
        channel = "email"
        async def send(self, notification, contact): await smtp.send(to=contact.email, ...)

    NOTIFICATION_SENDER=mycompany.mail:email_sender   # a callable taking the settings

The delivery task (`delivery.py`) calls `send` after the notification's row has committed,
never inside an event handler's transaction, and records every outcome in the database.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.bases import ConfigurationError
from services.notification.config import NotificationSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A notification as a sender sees it (a plain value, not a database row)."""

    notification_id: str
    user_id: str
    kind: str
    title: str
    body: str
    attempt: int
    """1 for the first try; a sender may use it, say, to switch to a fallback channel."""


@dataclass(frozen=True, slots=True)
class ContactDetails:
    user_id: str
    email: str
    display_name: str
    phone: str | None = None


@runtime_checkable
class NotificationSender(Protocol):
    """Delivers one notification to one contact.

    Return to report it delivered; raise (anything) to fail this attempt, which is retried
    with backoff until the attempts run out. Delivery is at-least-once: an instance that dies
    between `send` returning and the outcome being recorded sends again after its claim's
    lease, so an adapter that can pass an idempotency key (the notification id) should. Calls
    run concurrently (up to DELIVERY_CONCURRENCY) and are cut off at DELIVERY_SEND_TIMEOUT.
    """

    channel: str

    async def send(self, notification: Outgoing, contact: ContactDetails) -> None: ...


class LogSender:
    """The default: delivery is the log line (and the row the delivery task marks sent)."""

    channel = "log"

    async def send(self, notification: Outgoing, contact: ContactDetails) -> None:
        log.info("notification %s (%s) for %s <%s>: %s", notification.notification_id,
                 notification.kind, contact.display_name, contact.email, notification.title)


def sender_from_settings(settings: NotificationSettings) -> NotificationSender:
    """`log`, or the `module:callable` NOTIFICATION_SENDER names, called with the settings.
    A wrong name fails at start-up, not at the first delivery."""
    name = settings.notification_sender.strip()
    if name == "log":
        return LogSender()
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"NOTIFICATION_SENDER={name!r}: expected 'log' or 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"NOTIFICATION_SENDER={name!r}: {exc}") from exc
    try:
        sender = factory(settings)
    except Exception as exc:
        raise ConfigurationError(f"NOTIFICATION_SENDER={name!r} failed: {exc!r}") from exc
    if not isinstance(sender, NotificationSender):
        raise ConfigurationError(
            f"NOTIFICATION_SENDER={name!r} made {sender!r}, which has no async send() "
            "and channel: see services.notification.senders.NotificationSender")
    return sender
