"""The delivery task is woken only by a commit (never a rollback), once per commit however many
handlers asked; and its policy is the settings' (the task itself: test_delivery.py)."""

from __future__ import annotations

from sqlalchemy import text

from core.db import Database
from core.resilience import RetryPolicy
from services.notification.config import NotificationSettings
from services.notification.delivery import DeliveryPolicy, wake_after_commit


async def test_a_commit_wakes_each_callback_once(database: Database) -> None:
    woken: list[str] = []

    def first() -> None:
        woken.append("first")

    def second() -> None:
        woken.append("second")

    async with database.session() as session:
        for callback in (first, second, first):
            wake_after_commit(session, callback)
        await session.execute(text("SELECT 1"))
        assert woken == []
        await session.commit()
        assert woken == ["first", "second"]
        await session.execute(text("SELECT 1"))
        await session.commit()  # a later commit of the session asked nothing more
        assert woken == ["first", "second"]


async def test_a_rollback_forgets_the_callbacks(database: Database) -> None:
    woken: list[str] = []
    async with database.session() as session:
        wake_after_commit(session, lambda: woken.append("rolled back"))
        await session.execute(text("SELECT 1"))
        await session.rollback()
        await session.execute(text("SELECT 1"))
        await session.commit()
        wake_after_commit(session, lambda: woken.append("committed"))
        await session.execute(text("SELECT 1"))
        await session.commit()
        await session.execute(text("SELECT 1"))
        await session.rollback()  # nothing asked: nothing to forget
    assert woken == ["committed"]


def test_the_policy_is_the_settings() -> None:
    settings = NotificationSettings(
        delivery_batch_size=7, delivery_concurrency=3, delivery_send_timeout=2.5,
        delivery_max_attempts=9, delivery_retry_delay=1.5, delivery_retry_max_delay=60.0,
        delivery_lease=90.0, delivery_poll_interval=0.5)
    policy = DeliveryPolicy.from_settings(settings)
    assert policy == DeliveryPolicy(
        batch_size=7, concurrency=3, send_timeout=2.5,
        retry=RetryPolicy(max_attempts=9, initial_delay=1.5, max_delay=60.0), lease=90.0,
        poll_interval=0.5)
