"""Delivery claims, on SQLite and PostgreSQL: a notification being sent is never sent again
by another instance. The lease covers a whole batch (the policy refuses one that does not),
each outcome is recorded as its send ends and only while its claim holds, the lease is
judged by the database's clock (not a host's), and a paused process starts no send its
lease cannot cover."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from core.bases import ConfigurationError
from core.db import Database, types
from core.resilience import RetryPolicy
from services.notification import contacts, delivery, rules
from services.notification.config import NotificationSettings
from services.notification.delivery import DeliveryPolicy, DeliveryWorker
from services.notification.models import Contact, DeliveryStatus, Notification
from services.notification.senders import ContactDetails, Outgoing
from tests.helpers import eventually

NO_BACKOFF = RetryPolicy(max_attempts=3, initial_delay=0, max_delay=0, jitter=False)


@dataclass
class Gated:
    """A sender: records each call; sends listed in `held` wait for `gate`, then fail if
    `fail_late`; `finish_cancelled` makes a held send run on when it is cut off (as a sender
    that swallows cancellation does); `pause` blocks the whole process (time.sleep) on the
    first call, as a stop-the-world pause or SIGSTOP would."""

    delay: float = 0.0
    held: set[str] = field(default_factory=set)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    fail_late: bool = False
    finish_cancelled: bool = False
    pause: float = 0.0
    channel: str = "test"
    calls: list[Outgoing] = field(default_factory=list)

    async def send(self, notification: Outgoing, contact: ContactDetails) -> None:
        self.calls.append(notification)
        if self.pause and len(self.calls) == 1:
            time.sleep(self.pause)  # noqa: ASYNC251 - the point: the whole process stops
            return
        if notification.notification_id in self.held:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                if not self.finish_cancelled:
                    raise
                await self.gate.wait()
            if self.fail_late:
                raise ConnectionError("mail server hung up")
        elif self.delay:
            await asyncio.sleep(self.delay)

    def sent(self) -> list[tuple[str, int]]:
        return [(n.notification_id, n.attempt) for n in self.calls]


async def due(database: Database, count: int) -> list[str]:
    """`count` notifications due now, each for a user whose contact is known; their ids."""
    ids = []
    async with database.transaction() as session:
        for _ in range(count):
            user = str(uuid.uuid4())
            row = Notification(user_id=user, kind="security", title="t", body="b",
                               source_event_id=str(uuid.uuid4()),
                               delivery_status=DeliveryStatus.PENDING,
                               next_attempt_at=types.utcnow() - timedelta(seconds=1))
            session.add_all([Contact(user_id=user, email=f"{user}@example.com",
                                     display_name="Ada"), row])
            await session.flush()
            ids.append(str(row.id))
    return ids


async def rows(database: Database) -> dict[str, Notification]:
    async with database.session() as session:
        return {str(n.id): n for n in (await session.scalars(select(Notification))).all()}


async def all_sent(database: Database, ids: list[str]) -> bool:
    found = await rows(database)
    return all(found[i].delivery_status == DeliveryStatus.SENT for i in ids)


@pytest.fixture
def skewed_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This host's wall clock 130 s ahead (as the service's code reads it)."""
    real = types.utcnow

    def ahead() -> datetime:
        return real() + timedelta(seconds=130)

    for module in (types, delivery, contacts, rules):
        monkeypatch.setattr(module, "utcnow", ahead, raising=False)
    yield


# --- the policy ------------------------------------------------------------------------------

def rounds_time(p: DeliveryPolicy) -> float:
    return math.ceil(p.batch_size / p.concurrency) * p.send_timeout


def test_the_default_policy_sends_a_whole_batch_inside_its_lease() -> None:
    for p in (DeliveryPolicy(), DeliveryPolicy.from_settings(NotificationSettings())):
        assert rounds_time(p) < p.lease, p


def test_a_lease_a_batch_can_outlast_is_refused() -> None:
    """50 at a time, 4 at once, 10 s each: 13 rounds, 130 s, under a 120 s lease."""
    with pytest.raises(ConfigurationError, match=r"13 rounds x DELIVERY_SEND_TIMEOUT 10s = 130s"):
        DeliveryPolicy(batch_size=50, concurrency=4, send_timeout=10, lease=120)
    with pytest.raises(ValueError, match=r"DELIVERY_LEASE \(130s\) must exceed"):
        NotificationSettings(delivery_batch_size=50, delivery_concurrency=4,
                             delivery_send_timeout=10, delivery_lease=130)
    assert NotificationSettings(delivery_batch_size=50, delivery_concurrency=4,
                                delivery_send_timeout=10, delivery_lease=131)


# --- instances racing ------------------------------------------------------------------------

async def test_two_deliverers_racing_with_a_slow_sender_send_each_once(
        database: Database) -> None:
    """The default policy, its times scaled down 20x, two instances polling, and a mail
    server that takes 96% of the send timeout: every notification goes once. (With the old
    defaults, 50 per batch, the batch outlasted its lease and the other instance re-sent
    all 50.)"""
    scaled = DeliveryPolicy.from_settings(NotificationSettings())
    scaled = dataclasses.replace(scaled, send_timeout=scaled.send_timeout / 20,
                                 lease=scaled.lease / 20, poll_interval=0.05, retry=NO_BACKOFF)
    ids = await due(database, 50)
    senders = [Gated(delay=scaled.send_timeout * 0.96) for _ in range(2)]
    workers = [DeliveryWorker(database, s, scaled) for s in senders]
    for worker in workers:
        await worker.start()
    try:
        await eventually(lambda: all_sent(database, ids), timeout=60)
    finally:
        for worker in workers:
            await worker.stop()

    attempts = senders[0].sent() + senders[1].sent()
    assert len(attempts) == len(set(attempts)), "an attempt was sent twice"
    assert {i for i, _ in attempts} == set(ids)


async def test_each_outcome_is_recorded_as_its_send_ends(database: Database) -> None:
    quick, slow = await due(database, 2)
    sender = Gated(held={slow})
    worker = DeliveryWorker(database, sender, DeliveryPolicy(retry=NO_BACKOFF))
    batch = asyncio.create_task(worker.run_once())
    try:
        await eventually(lambda: all_sent(database, [quick]), timeout=10)
        assert (await rows(database))[slow].delivery_status == DeliveryStatus.PENDING
    finally:
        sender.gate.set()
        assert await batch == 2
    assert await all_sent(database, [quick, slow])


async def test_a_host_clock_ahead_does_not_take_over_a_send_in_progress(
        database: Database, request: pytest.FixtureRequest) -> None:
    [held] = await due(database, 1)
    first = Gated(held={held})
    sending = asyncio.create_task(DeliveryWorker(database, first).run_once())
    await eventually(lambda: first.calls)
    request.getfixturevalue("skewed_host")  # the other instance's host runs 130 s ahead
    second = Gated()

    try:
        assert await DeliveryWorker(database, second).run_once() == 0
    finally:
        first.gate.set()
        await sending
    assert second.calls == []
    row = (await rows(database))[held]
    assert (row.delivery_status, row.delivery_attempts) == (DeliveryStatus.SENT, 1)


async def test_a_late_outcome_after_the_claim_was_taken_over_changes_nothing(
        database: Database) -> None:
    """A sender that runs on past its timeout ends after the lease; another instance has
    claimed and sent the notification meanwhile. The late failure must not undo that."""
    [held] = await due(database, 1)
    short = DeliveryPolicy(batch_size=1, concurrency=1, send_timeout=0.2, lease=0.5,
                           retry=NO_BACKOFF)
    late = Gated(held={held}, finish_cancelled=True, fail_late=True)
    stuck = asyncio.create_task(DeliveryWorker(database, late, short).run_once())
    await eventually(lambda: late.calls)
    other, survivor = DeliveryWorker(database, Gated(), short), None
    try:
        await eventually(other.run_once, timeout=10)  # claims once the lease has run out
        survivor = (await rows(database))[held]
    finally:
        late.gate.set()
        await stuck

    row = (await rows(database))[held]
    assert survivor is not None and survivor.delivery_status == DeliveryStatus.SENT
    assert (row.delivery_status, row.delivery_attempts, row.last_error, row.next_attempt_at,
            row.delivered_at) == (DeliveryStatus.SENT, 1, None, None, survivor.delivered_at)


async def test_a_paused_process_starts_no_send_its_lease_cannot_cover(
        database: Database) -> None:
    """The process stops for a whole lease during the first send (3 x 0.2 s < 0.8 s, so the
    policy is sound): the other two were due to another instance by then, so this one hands
    them back unsent, and they go in the next round."""
    ids = await due(database, 3)
    sender = Gated(pause=0.8)
    worker = DeliveryWorker(database, sender, DeliveryPolicy(
        batch_size=3, concurrency=1, send_timeout=0.2, lease=0.8, retry=NO_BACKOFF))

    assert await worker.run_once() == 3
    assert len(sender.calls) == 1
    found = await rows(database)
    [first] = [found[i] for i in ids if found[i].delivery_status == DeliveryStatus.SENT]
    assert first.id == uuid.UUID(sender.calls[0].notification_id)
    handed_back = [found[i] for i in ids if found[i] is not first]
    assert [(n.delivery_status, n.delivery_attempts, n.claim_token) for n in handed_back] == [
        (DeliveryStatus.PENDING, 0, None)] * 2

    assert await worker.run_once() == 2, "due again at once, not after the lease"
    assert sorted(i for i, _ in sender.sent()) == sorted(ids)
    assert await all_sent(database, ids)
