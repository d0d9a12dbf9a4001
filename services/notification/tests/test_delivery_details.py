"""What the delivery task hands the sender and records, and how its loop drains and polls,
on details test_delivery.py leaves open (one batch at a time, the oldest due first, a row
whose contact went away, which errors are retried)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, update

from core.db import Database
from core.resilience import RetryPolicy
from services.notification.delivery import DeliveryPolicy, DeliveryWorker
from services.notification.models import Contact, DeliveryStatus, Notification
from services.notification.tests.conftest import (
    Flaky,
    Harness,
    harness,
    new_user,
    one_due,
    password_changed,
    policy,
    reread,
)
from tests.helpers import eventually


async def test_the_sender_gets_the_whole_notification_and_contact(database: Database) -> None:
    h, sender = harness(database), Flaky()
    notification = await one_due(h)
    async with database.transaction() as session:
        await session.execute(update(Contact).where(Contact.user_id == notification.user_id)
                              .values(phone="+4915100000"))
    await DeliveryWorker(database, sender, policy()).run_once()
    [(sent, contact)] = sender.calls
    assert (sent.user_id, sent.title, sent.body) == (
        notification.user_id, notification.title, notification.body)
    assert (contact.user_id, contact.email, contact.display_name, contact.phone) == (
        notification.user_id, "ada@example.com", "Ada", "+4915100000")


async def test_a_row_whose_contact_went_away_waits_for_one(database: Database) -> None:
    h, sender = harness(database), Flaky()
    notification = await one_due(h)
    async with database.transaction() as session:
        await session.execute(delete(Contact).where(Contact.user_id == notification.user_id))
    assert await DeliveryWorker(database, sender, policy()).run_once() == 1
    row = await reread(h, notification)
    assert (row.delivery_status, row.next_attempt_at, row.claim_token,
            row.delivery_attempts) == (DeliveryStatus.AWAITING_CONTACT, None, None, 0)
    assert sender.calls == []


async def test_a_notification_out_of_attempts_is_due_no_more(database: Database) -> None:
    h, sender = harness(database), Flaky(failures=1)
    notification = await one_due(h)
    await DeliveryWorker(database, sender, policy(attempts=1)).run_once()
    row = await reread(h, notification)
    assert (row.delivery_status, row.next_attempt_at, row.claim_token) == (
        DeliveryStatus.FAILED, None, None)


async def test_only_errors_the_policy_retries_are_retried(database: Database) -> None:
    h, sender = harness(database), Flaky(failures=1)
    notification = await one_due(h)
    never = DeliveryPolicy(retry=RetryPolicy(max_attempts=3, initial_delay=0, max_delay=0,
                                             should_retry=lambda e: False))
    await DeliveryWorker(database, sender, never).run_once()
    row = await reread(h, notification)
    assert (row.delivery_status, row.delivery_attempts) == (DeliveryStatus.FAILED, 1)


async def test_the_error_decides_whether_it_is_retried(database: Database) -> None:
    h, sender = harness(database), Flaky(failures=1)  # raises ConnectionError
    notification = await one_due(h)
    transient = DeliveryPolicy(retry=RetryPolicy(
        max_attempts=3, initial_delay=0, max_delay=0,
        should_retry=lambda e: isinstance(e, ConnectionError)))
    await DeliveryWorker(database, sender, transient).run_once()
    row = await reread(h, notification)
    assert (row.delivery_status, row.delivery_attempts) == (DeliveryStatus.PENDING, 1)


async def _due(h: Harness, count: int) -> list[Notification]:
    due = []
    for _ in range(count):
        user = new_user()
        await h.add_contact(user, f"{user}@example.com")
        await h.publish(password_changed(user))
        due += await h.notifications(user)
    return due


async def test_a_claim_takes_a_batch_the_oldest_due_first(database: Database) -> None:
    h, sender = harness(database), Flaky()
    rows = await _due(h, 3)
    now = datetime.now(UTC).replace(microsecond=0)
    async with database.transaction() as session:
        for age, row in zip((1, 3, 2), rows, strict=True):  # minutes overdue
            await session.execute(update(Notification).where(Notification.id == row.id)
                                  .values(next_attempt_at=now - timedelta(minutes=age)))
    worker = DeliveryWorker(database, sender, policy(batch_size=2, concurrency=2))
    assert await worker.run_once() == 2
    assert {n.notification_id for n, _ in sender.calls} == {str(rows[1].id), str(rows[2].id)}


async def test_the_task_drains_full_batches_at_once(database: Database) -> None:
    h, sender = harness(database), Flaky()
    rows = await _due(h, 4)
    worker = DeliveryWorker(database, sender, policy(batch_size=2, concurrency=2,
                                                     poll_interval=60))
    await worker.start()
    assert worker._task is not None and worker._task.get_name() == "notification-delivery"
    try:
        worker.wake()  # one wake: the second batch must not wait for the next poll
        await eventually(lambda: len(sender.calls) == 4, timeout=10)
    finally:
        await worker.stop()
    assert {n.notification_id for n, _ in sender.calls} == {str(r.id) for r in rows}


async def test_the_task_polls_for_retries_that_came_due(database: Database) -> None:
    h, sender = harness(database), Flaky(failures=1)
    notification = await one_due(h)
    worker = DeliveryWorker(database, sender, policy(attempts=2, poll_interval=0.05))
    await worker.start()
    try:
        worker.wake()  # the first attempt fails; the retry is due at once, found by a poll
        await eventually(lambda: len(sender.calls) == 2, timeout=10)
    finally:
        await worker.stop()
    assert [(n.notification_id, n.attempt) for n, _ in sender.calls] == [
        (str(notification.id), 1), (str(notification.id), 2)]
