"""Delivery: a background task sends due notifications through the sender and records how it
went, apart from the event handlers.

Why not send in the handler: the handler's transaction (its inbox row, the notification, the
outbox event) would stay open for as long as a mail server takes, holding a connection (on
SQLite, the one write lock), and a send that succeeded could still be rolled back with it and
repeated. Instead the handler commits the notification as `pending` and wakes this task, which
sends only committed rows. A send that fails is recorded (attempts, last error) and retried
with backoff until DELIVERY_MAX_ATTEMPTS; the row is never deleted, so nothing is lost.

Several instances may run. A batch of due rows is claimed in one conditional UPDATE that
stamps a fresh claim token and moves `next_attempt_at` one lease ahead; the lease is stamped
and judged by the database's clock (see clock.py), so a host whose clock runs ahead does not
take over a claim that is still running. Each outcome is recorded as its send ends, and only
while the row still carries this claim's token: a record that comes after another instance
took the row over changes nothing. The policy refuses a lease shorter than a batch can take
to send, and a send that could no longer end inside the lease (the process was paused) is
not started: the row is handed back at once. An instance that dies mid-send leaves its claim
to expire, and the row is sent again: delivery is at-least-once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import event as sa_event
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.bases import ConfigurationError
from core.db import Database
from core.resilience import RetryPolicy
from core.runtime import RuntimeKey
from core.tasks import cancel_and_wait, periodically
from services.notification.clock import db_now
from services.notification.config import NotificationSettings, lease_problem
from services.notification.models import Contact, DeliveryStatus, Notification
from services.notification.senders import ContactDetails, NotificationSender, Outgoing

log = logging.getLogger(__name__)
MAX_ERROR_LENGTH = 1000
DEFAULT_RETRY = RetryPolicy(max_attempts=5, initial_delay=5.0, max_delay=600.0)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How the delivery task batches, bounds and retries (see NotificationSettings). Refused
    at construction if the lease cannot cover a batch (`lease_problem`)."""

    batch_size: int = 40
    concurrency: int = 4
    send_timeout: float = 10.0
    retry: RetryPolicy = DEFAULT_RETRY
    lease: float = 120.0
    poll_interval: float = 2.0

    def __post_init__(self) -> None:
        problem = lease_problem(self.batch_size, self.concurrency, self.send_timeout,
                                self.lease)
        if problem:
            raise ConfigurationError(problem)

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
class _Claim:
    token: str
    deadline: float
    """Monotonic, taken before the database stamped the lease: errs early."""


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
            self._task = asyncio.create_task(
                periodically(self._drain, self.policy.poll_interval, wake=self._wake, log=log,
                             failed="notification delivery round failed; trying again later"),
                name="notification-delivery")

    async def stop(self) -> None:
        """Stop at once; sends cut short keep their claim and go again after the lease."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def run_once(self) -> int:
        """Claim one batch of due notifications and send them, recording each outcome as
        its send ends; how many were claimed (for tests, and the loop's drain)."""
        await self._release_found_contacts()
        token, asked = uuid.uuid4().hex, time.monotonic()
        claimed = await self._claim(token)
        if not claimed:
            return 0
        claim = _Claim(token, asked + self.policy.lease)
        contacts = await self._contacts({n.user_id for n in claimed})
        await asyncio.gather(*(self._deliver(n, contacts.get(n.user_id), claim)
                               for n in claimed))
        return len(claimed)

    async def _drain(self) -> None:
        while await self.run_once() >= self.policy.batch_size:
            pass  # a full batch: there may be more due right now

    @property
    def _dialect(self) -> str:
        return self.database.dialect

    async def _release_found_contacts(self) -> None:
        """Make due what waits for a contact that is there by now. The profile handler
        releases them itself, but it cannot see a notification whose handler had not
        committed yet (it was still asking the user service): this catches those."""
        async with self.database.transaction() as session:
            await session.execute(
                update(Notification)
                .where(Notification.delivery_status == DeliveryStatus.AWAITING_CONTACT,
                       Notification.user_id.in_(select(Contact.user_id)))
                .values(delivery_status=DeliveryStatus.PENDING,
                        next_attempt_at=db_now(self._dialect))
                .execution_options(synchronize_session=False))

    async def _claim(self, token: str) -> list[Outgoing]:
        """Stamp `token` and the lease on up to a batch of due rows. The UPDATE checks that
        each row is still due, so of two instances picking the same rows one wins each (on
        PostgreSQL the other skips rows locked by a claim in progress and takes the next)."""
        now = db_now(self._dialect)
        due = (select(Notification.id)
               .where(Notification.delivery_status == DeliveryStatus.PENDING,
                      Notification.next_attempt_at <= now)
               .order_by(Notification.next_attempt_at, Notification.id)
               .limit(self.policy.batch_size))
        if self._dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        # Materialized once: as a plain `IN (subquery)`, PostgreSQL may run the LIMITed
        # locking subquery again for the UPDATE's rows and claim more than a batch.
        picked = due.cte("due").prefix_with("MATERIALIZED", dialect="postgresql")
        async with self.database.transaction() as session:
            rows = (await session.execute(
                update(Notification)
                .where(Notification.id.in_(select(picked.c.id)),
                       Notification.delivery_status == DeliveryStatus.PENDING,
                       Notification.next_attempt_at <= now)
                .values(claim_token=token,
                        next_attempt_at=db_now(self._dialect, self.policy.lease))
                .returning(Notification.id, Notification.user_id, Notification.kind,
                           Notification.title, Notification.body,
                           Notification.delivery_attempts)
                .execution_options(synchronize_session=False))).all()
        return sorted((Outgoing(str(r.id), r.user_id, r.kind, r.title, r.body,
                                r.delivery_attempts + 1) for r in rows),
                      key=lambda n: n.notification_id)

    async def _contacts(self, user_ids: set[str]) -> dict[str, ContactDetails]:
        async with self.database.session() as session:
            rows = (await session.execute(
                select(Contact).where(Contact.user_id.in_(user_ids)))).scalars().all()
        return {r.user_id: ContactDetails(r.user_id, r.email, r.display_name, r.phone)
                for r in rows}

    async def _deliver(self, n: Outgoing, contact: ContactDetails | None,
                       claim: _Claim) -> None:
        if contact is None:  # not an attempt: wait for the profile event
            await self._record(n, claim, {"delivery_status": DeliveryStatus.AWAITING_CONTACT,
                                          "next_attempt_at": None})
            return
        async with self._slots:
            if time.monotonic() + self.policy.send_timeout >= claim.deadline:
                # only a paused process gets here (the policy keeps a batch inside its
                # lease): a send started now could still run when another instance claims
                log.warning("notification %s: too little of its lease left to send; handed "
                            "back", n.notification_id)
                await self._record(n, claim, {"next_attempt_at": db_now(self._dialect)})
                return
            error: Exception | None = None
            try:
                async with asyncio.timeout(self.policy.send_timeout):
                    await self.sender.send(n, contact)
            except Exception as exc:
                error = exc
        await self._record(n, claim, self._outcome(n, error), error)

    def _outcome(self, n: Outgoing, error: Exception | None) -> dict[str, object]:
        if error is None:
            return {"delivery_status": DeliveryStatus.SENT,
                    "delivered_at": db_now(self._dialect), "delivery_attempts": n.attempt,
                    "next_attempt_at": None, "last_error": None}
        retry = self.policy.retry
        message = f"{type(error).__name__}: {error}"
        values: dict[str, object] = {"delivery_attempts": n.attempt,
                                     "last_error": message[:MAX_ERROR_LENGTH]}
        if retry.retries(error, n.attempt):
            values["next_attempt_at"] = db_now(self._dialect, retry.delay(n.attempt))
        else:
            values.update(delivery_status=DeliveryStatus.FAILED, next_attempt_at=None)
        return values

    async def _record(self, n: Outgoing, claim: _Claim, values: Mapping[str, object],
                      error: Exception | None = None) -> None:
        """Write one outcome if the row is still this claim's; never raises (a row left
        unrecorded keeps its claim and goes again after the lease)."""
        try:
            async with self.database.transaction() as session:
                result = await session.execute(
                    update(Notification)
                    .where(Notification.id == uuid.UUID(n.notification_id),
                           Notification.claim_token == claim.token,
                           Notification.delivery_status == DeliveryStatus.PENDING)
                    .values(claim_token=None, **values)
                    .execution_options(synchronize_session=False))
        except Exception:
            log.exception("notification %s: recording attempt %d failed; it goes again after "
                          "the lease", n.notification_id, n.attempt)
            return
        if not result.rowcount:  # type: ignore[attr-defined]
            log.warning("notification %s: attempt %d ended after its claim was taken over; "
                        "not recorded", n.notification_id, n.attempt)
        elif values.get("delivery_status") == DeliveryStatus.SENT:
            log.info("notification %s sent via %s (attempt %d)", n.notification_id,
                     self.sender.channel, n.attempt)
        elif error is not None:
            retrying = values.get("delivery_status") != DeliveryStatus.FAILED
            (log.info if retrying else log.error)(
                "notification %s: attempt %d failed, %s: %s", n.notification_id, n.attempt,
                "retrying" if retrying else "giving up", values["last_error"])


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


class Wakeable(Protocol):
    def wake(self) -> None: ...


DELIVERY: RuntimeKey[Wakeable] = RuntimeKey("delivery")
"""The delivery task as the handlers see it: told when a notification became due (the
running service's `DeliveryWorker`)."""
