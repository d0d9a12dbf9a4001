"""Delivery: a background task sends due notifications through the sender and records how it
went, apart from the event handlers.

Why not send in the handler: the handler's transaction (its inbox row, the notification, the
outbox event) would stay open for as long as a mail server takes, holding a connection (on
SQLite, the one write lock), and a send that succeeded could still be rolled back with it and
repeated. Instead the handler commits the notification as `pending` and wakes this task, which
sends only committed rows. A send that fails is recorded (attempts, last error) and retried
with backoff until DELIVERY_MAX_ATTEMPTS; the row is never deleted, so nothing is lost.

Several instances may run: a due row is claimed by moving its `next_attempt_at` one lease
ahead, with a conditional UPDATE that only one instance wins. An instance that dies mid-send
leaves its claim to expire, and the row is sent again: delivery is at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import event as sa_event
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.engine import Database
from core.db.types import utcnow
from core.resilience.retry import RetryPolicy
from core.tasks import cancel_and_wait
from services.notification.config import NotificationSettings
from services.notification.models import Contact, DeliveryStatus, Notification
from services.notification.senders import ContactDetails, NotificationSender, Outgoing

log = logging.getLogger(__name__)
MAX_ERROR_LENGTH = 1000
DEFAULT_RETRY = RetryPolicy(max_attempts=5, initial_delay=5.0, max_delay=600.0)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How the delivery task batches, bounds and retries (see NotificationSettings)."""

    batch_size: int = 50
    concurrency: int = 4
    send_timeout: float = 10.0
    retry: RetryPolicy = DEFAULT_RETRY
    lease: float = 120.0
    poll_interval: float = 2.0

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> DeliveryPolicy:
        return cls(
            batch_size=settings.delivery_batch_size,
            concurrency=settings.delivery_concurrency,
            send_timeout=settings.delivery_send_timeout,
            retry=RetryPolicy(max_attempts=settings.delivery_max_attempts,
                              initial_delay=settings.delivery_retry_delay,
                              max_delay=settings.delivery_retry_max_delay),
            lease=settings.delivery_lease,
            poll_interval=settings.delivery_poll_interval,
        )


@dataclass(frozen=True, slots=True)
class _Outcome:
    notification: Outgoing
    error: BaseException | None = None
    no_contact: bool = False


class DeliveryWorker:
    """Sends due notifications: woken after a commit that made one due (`wake`), and every
    `poll_interval` for retries that came due. One task; at most `concurrency` sends at once."""

    def __init__(self, database: Database, sender: NotificationSender,
                 policy: DeliveryPolicy | None = None) -> None:
        self.database = database
        self.sender = sender
        self.policy = policy or DeliveryPolicy()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.policy.concurrency)
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Look for due notifications now (safe to call from any callback on the loop)."""
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="notification-delivery")

    async def stop(self) -> None:
        """Stop at once; sends cut short keep their claim and go again after the lease."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def run_once(self) -> int:
        """Claim one batch of due notifications, send them, record the outcomes; how many
        were claimed (for tests, and the loop's drain)."""
        await self._release_found_contacts()
        claimed = await self._claim()
        if not claimed:
            return 0
        contacts = await self._contacts({n.user_id for n in claimed})
        outcomes = await asyncio.gather(*(self._send(n, contacts.get(n.user_id))
                                          for n in claimed))
        await self._record(outcomes)
        return len(claimed)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                while await self.run_once() >= self.policy.batch_size:
                    pass  # a full batch: there may be more due right now
            except Exception:
                log.exception("notification delivery round failed; trying again later")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.policy.poll_interval)

    async def _release_found_contacts(self) -> None:
        """Make due what waits for a contact that is there by now. The profile handler
        releases them itself, but it cannot see a notification whose handler had not
        committed yet (it was still asking the user service): this catches those."""
        async with self.database.transaction() as session:
            await session.execute(
                update(Notification)
                .where(Notification.delivery_status == DeliveryStatus.AWAITING_CONTACT,
                       Notification.user_id.in_(select(Contact.user_id)))
                .values(delivery_status=DeliveryStatus.PENDING, next_attempt_at=utcnow())
                .execution_options(synchronize_session=False))

    async def _claim(self) -> list[Outgoing]:
        now = utcnow()
        lease_end = now + timedelta(seconds=self.policy.lease)
        claimed: list[Outgoing] = []
        async with self.database.transaction() as session:
            due = (await session.execute(
                select(Notification)
                .where(Notification.delivery_status == DeliveryStatus.PENDING,
                       Notification.next_attempt_at <= now)
                .order_by(Notification.next_attempt_at, Notification.id)
                .limit(self.policy.batch_size))).scalars().all()
            for row in due:
                won = await session.execute(
                    update(Notification)
                    .where(Notification.id == row.id,
                           Notification.delivery_status == DeliveryStatus.PENDING,
                           Notification.next_attempt_at == row.next_attempt_at)
                    .values(next_attempt_at=lease_end)
                    .execution_options(synchronize_session=False))
                if won.rowcount:  # type: ignore[attr-defined]
                    claimed.append(Outgoing(str(row.id), row.user_id, row.kind, row.title,
                                            row.body, row.delivery_attempts + 1))
        return claimed

    async def _contacts(self, user_ids: set[str]) -> dict[str, ContactDetails]:
        async with self.database.session() as session:
            rows = (await session.execute(
                select(Contact).where(Contact.user_id.in_(user_ids)))).scalars().all()
        return {r.user_id: ContactDetails(r.user_id, r.email, r.display_name, r.phone)
                for r in rows}

    async def _send(self, notification: Outgoing, contact: ContactDetails | None) -> _Outcome:
        if contact is None:
            return _Outcome(notification, no_contact=True)
        async with self._slots:
            try:
                async with asyncio.timeout(self.policy.send_timeout):
                    await self.sender.send(notification, contact)
            except Exception as exc:
                return _Outcome(notification, exc)
        return _Outcome(notification)

    async def _record(self, outcomes: list[_Outcome]) -> None:
        now = utcnow()
        retry = self.policy.retry
        async with self.database.transaction() as session:
            for outcome in outcomes:
                n = outcome.notification
                if outcome.no_contact:  # not an attempt: wait for the profile event
                    values: dict[str, object] = {
                        "delivery_status": DeliveryStatus.AWAITING_CONTACT,
                        "next_attempt_at": None}
                elif outcome.error is None:
                    values = {"delivery_status": DeliveryStatus.SENT, "delivered_at": now,
                              "delivery_attempts": n.attempt, "next_attempt_at": None,
                              "last_error": None}
                    log.info("notification %s sent via %s (attempt %d)", n.notification_id,
                             self.sender.channel, n.attempt)
                else:
                    error = f"{type(outcome.error).__name__}: {outcome.error}"
                    values = {"delivery_attempts": n.attempt,
                              "last_error": error[:MAX_ERROR_LENGTH]}
                    if retry.retries(outcome.error, n.attempt):
                        values["next_attempt_at"] = now + timedelta(seconds=retry.delay(
                            n.attempt))
                        log.info("notification %s: attempt %d failed, retrying: %s",
                                 n.notification_id, n.attempt, error)
                    else:
                        values.update(delivery_status=DeliveryStatus.FAILED,
                                      next_attempt_at=None)
                        log.error("notification %s: giving up after %d attempts: %s",
                                  n.notification_id, n.attempt, error)
                await session.execute(
                    update(Notification).where(Notification.id == uuid.UUID(n.notification_id))
                    .values(**values).execution_options(synchronize_session=False))


def wake_after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Call `callback` once `session`'s transaction commits (never if it rolls back)."""
    sync = session.sync_session
    callbacks: list[Callable[[], None]] = sync.info.setdefault(_AFTER_COMMIT, [])
    if callback not in callbacks:
        callbacks.append(callback)
    if not sa_event.contains(sync, "after_commit", _committed):
        sa_event.listen(sync, "after_commit", _committed)
        sa_event.listen(sync, "after_rollback", _rolled_back)


_AFTER_COMMIT = "notification.after_commit"


def _committed(sync: object) -> None:
    for callback in getattr(sync, "info", {}).pop(_AFTER_COMMIT, []):
        callback()


def _rolled_back(sync: object) -> None:
    getattr(sync, "info", {}).pop(_AFTER_COMMIT, None)
