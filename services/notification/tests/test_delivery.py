"""The delivery task on SQLite and PostgreSQL: it sends committed, due notifications once,
records every failure and retries it, gives up only after the last attempt (keeping the
row), cuts off a slow sender, and two instances never both claim one notification. Also the
sender seam: settings choose the adapter, and a wrong one fails at start-up."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.bases import ConfigurationError
from core.db import Database
from core.resilience import RetryPolicy
from services.notification.config import NotificationSettings
from services.notification.delivery import DeliveryPolicy, DeliveryWorker
from services.notification.models import DeliveryStatus
from services.notification.senders import (
    LogSender,
    sender_from_settings,
)
from services.notification.tests.conftest import (
    Flaky,
    harness,
    new_user,
    one_due,
    policy,
    registered,
    reread,
)
from tests.helpers import eventually


async def test_a_due_notification_is_sent_once_to_its_contact(database: Database) -> None:
    h, sender = harness(database), Flaky()
    notification = await one_due(h, "ada@example.com")
    worker = DeliveryWorker(database, sender, policy())

    assert await worker.run_once() == 1
    assert await worker.run_once() == 0

    [(sent, contact)] = sender.calls
    assert (sent.notification_id, sent.kind, sent.attempt) == (
        str(notification.id), "security", 1)
    assert contact.email == "ada@example.com"
    row = await reread(h, notification)
    assert (row.delivery_status, row.delivery_attempts) == (DeliveryStatus.SENT, 1)
    assert row.delivered_at is not None and row.next_attempt_at is None


async def test_a_failing_send_is_recorded_and_retried_until_it_goes(database: Database) -> None:
    h, sender = harness(database), Flaky(failures=2)
    notification = await one_due(h)
    worker = DeliveryWorker(database, sender, policy(attempts=3))

    await worker.run_once()
    row = await reread(h, notification)
    assert (row.delivery_status, row.delivery_attempts) == (DeliveryStatus.PENDING, 1)
    assert row.last_error == "ConnectionError: mail server down (attempt 1)"
    await worker.run_once()
    await worker.run_once()

    row = await reread(h, notification)
    assert (row.delivery_status, row.delivery_attempts) == (DeliveryStatus.SENT, 3)
    assert row.last_error is None
    assert [n.attempt for n, _ in sender.calls] == [1, 2, 3]


async def test_out_of_attempts_it_is_failed_and_kept(database: Database) -> None:
    h, sender = harness(database), Flaky(failures=99)
    notification = await one_due(h)
    worker = DeliveryWorker(database, sender, policy(attempts=2))

    for _ in range(4):
        await worker.run_once()

    row = await reread(h, notification)
    assert (row.delivery_status, row.delivery_attempts) == (DeliveryStatus.FAILED, 2)
    assert row.last_error is not None and "attempt 2" in row.last_error
    assert len(sender.calls) == 2


async def test_a_retry_waits_for_its_backoff(database: Database) -> None:
    h, sender = harness(database), Flaky(failures=1)
    await one_due(h)
    worker = DeliveryWorker(database, sender, DeliveryPolicy(retry=RetryPolicy(
        max_attempts=3, initial_delay=60, jitter=False)))

    await worker.run_once()
    assert await worker.run_once() == 0, "not due for another minute"
    assert len(sender.calls) == 1


async def test_a_slow_sender_is_cut_off_and_retried(database: Database) -> None:
    h, sender = harness(database), Flaky(delay=5)
    notification = await one_due(h)
    worker = DeliveryWorker(database, sender, policy(send_timeout=0.1))

    await worker.run_once()

    row = await reread(h, notification)
    assert (row.delivery_status, row.delivery_attempts) == (DeliveryStatus.PENDING, 1)
    assert row.last_error is not None and row.last_error.startswith("TimeoutError")


async def test_a_notification_without_contact_is_not_sent(database: Database) -> None:
    h, sender = harness(database), Flaky()
    user = new_user()
    h.users.silent.add(user)
    await h.publish(registered(user))

    assert await DeliveryWorker(database, sender, policy()).run_once() == 0
    assert sender.calls == []


async def test_two_instances_never_send_one_notification_twice(database: Database) -> None:
    h = harness(database)
    for _ in range(6):
        await one_due(h)
    senders = [Flaky(delay=0.01), Flaky(delay=0.01)]
    workers = [DeliveryWorker(database, s, policy(batch_size=6)) for s in senders]

    claimed = await asyncio.gather(*(w.run_once() for w in workers))

    sent = [n.notification_id for s in senders for n, _ in s.calls]
    assert sum(claimed) == 6 and sorted(sent) == sorted(set(sent)) and len(sent) == 6


async def test_the_running_task_sends_when_woken(database: Database) -> None:
    h, sender = harness(database), Flaky()
    worker = DeliveryWorker(database, sender, policy(poll_interval=60))
    await worker.start()
    try:
        await asyncio.sleep(0.05)  # its first round found nothing; now it sleeps a minute
        notification = await one_due(h)
        worker.wake()
        for _ in range(100):
            if (await reread(h, notification)).delivery_status == DeliveryStatus.SENT:
                break
            await asyncio.sleep(0.02)
        assert (await reread(h, notification)).delivery_status == DeliveryStatus.SENT
    finally:
        await worker.stop()


# --- the sender seam (no database) ---------------------------------------------------------

def make_flaky(settings: NotificationSettings) -> Flaky:
    return Flaky()


def not_a_sender(settings: NotificationSettings) -> object:
    return object()


def broken_factory(settings: NotificationSettings) -> Flaky:
    raise KeyError("SMTP_HOST")


def test_settings_choose_the_sender() -> None:
    assert isinstance(sender_from_settings(NotificationSettings()), LogSender)
    chosen = sender_from_settings(NotificationSettings(
        notification_sender=f"{__name__}:make_flaky"))
    assert isinstance(chosen, Flaky)


@pytest.mark.parametrize("name", ["smtp", f"{__name__}:nothing_here", "no.such.module:x",
                                  f"{__name__}:not_a_sender", f"{__name__}:broken_factory"])
def test_a_wrong_sender_fails_at_start_up(name: str) -> None:
    with pytest.raises(ConfigurationError, match="NOTIFICATION_SENDER"):
        sender_from_settings(NotificationSettings(notification_sender=name))


def test_a_lease_shorter_than_a_send_is_refused() -> None:
    with pytest.raises(ValueError, match="DELIVERY_LEASE"):
        NotificationSettings(delivery_lease=5, delivery_send_timeout=10)


async def test_a_contact_that_came_while_the_handler_asked_is_found(database: Database) -> None:
    """The profile handler released nothing (the notification was not committed yet); the
    delivery task still finds the contact and sends."""
    h, sender = harness(database), Flaky()
    user = new_user()
    h.users.silent.add(user)
    await h.publish(registered(user))
    await h.add_contact(user, "raced@example.com")  # committed after the notification

    assert await DeliveryWorker(database, sender, policy()).run_once() == 1
    [(_, contact)] = sender.calls
    assert contact.email == "raced@example.com"


async def test_a_send_cut_short_by_a_dying_instance_goes_again_after_the_lease(
        database: Database) -> None:
    h = harness(database)
    notification = await one_due(h)
    slow = Flaky(delay=30)
    lease = 3.0  # long enough for a loaded machine to reach the first check inside it
    dying = DeliveryWorker(database, slow, policy(batch_size=1, concurrency=1, lease=lease,
                                                  send_timeout=2))
    started = time.monotonic()
    await dying.start()
    for _ in range(100):  # until it holds the claim and is stuck sending
        if slow.calls:
            break
        await asyncio.sleep(0.02)
    await dying.stop()  # the instance dies mid-send: nothing recorded, the claim stays
    survivor = Flaky()
    worker = DeliveryWorker(database, survivor, policy())

    assert await worker.run_once() == 0, "claimed by the dead instance until its lease ends"
    assert await eventually(worker.run_once, timeout=lease + 10, interval=0.1) == 1
    assert time.monotonic() - started >= lease - 0.1, "taken over before the lease ended"
    row = await reread(h, notification)
    assert (row.delivery_status, row.delivery_attempts) == (DeliveryStatus.SENT, 1)
    assert [n.notification_id for n, _ in survivor.calls] == [str(notification.id)]


def test_the_service_listens_on_its_contract_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVICE_PORT", raising=False)
    assert NotificationSettings().service_port == 8004
