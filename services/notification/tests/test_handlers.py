"""The event handlers, through the in-memory bus and the real inbox, on SQLite and
PostgreSQL: what each event makes, exactly once; the contact copy's ordering; asking the user
service for a missing contact, and carrying on without it."""

from __future__ import annotations

import pytest

from core.db import Database
from core.messaging import Outcome
from services.notification.events import NotificationCreated
from services.notification.models import Contact, DeliveryStatus, Notification
from services.notification.senders import ContactDetails
from services.notification.tests.conftest import (
    T0,
    Harness,
    driver_registered,
    driver_status_changed,
    harness,
    later,
    new_user,
    password_changed,
    profile_created,
    profile_updated,
    registered,
)


@pytest.fixture
async def h(database: Database) -> Harness:
    return harness(database)


async def test_a_registration_makes_one_welcome_and_its_event(h: Harness) -> None:
    user = new_user()
    await h.add_contact(user, "ada@example.com")
    event = registered(user)

    await h.publish(event)

    [welcome] = await h.notifications(user)
    assert (welcome.kind, welcome.delivery_status) == ("welcome", DeliveryStatus.PENDING)
    assert welcome.source_event_id == str(event.event_id)
    assert welcome.next_attempt_at is not None and welcome.read_at is None
    [row] = await h.outbox_rows()
    assert (row.topic, row.key, row.event_type) == (
        "notification.events", user, NotificationCreated.EVENT_TYPE)
    created = NotificationCreated.model_validate_json(row.payload)
    assert created.data.notification_id == str(welcome.id)
    assert (created.data.user_id, created.data.kind) == (user, "welcome")
    assert created.causation_id == str(event.event_id)
    assert h.wakes == [1], "the delivery task is woken once the notification commits"
    assert h.users.asked == [], "a known contact needs no question"


async def test_a_notification_keeps_the_correlation_id_of_the_event_that_caused_it(
        h: Harness) -> None:
    user, other = new_user(), new_user()
    await h.add_contact(user, "ada@example.com")
    await h.add_contact(other, "bob@example.com")
    await h.publish(registered(user).model_copy(update={"correlation_id": "req-1"}))
    first = registered(other)  # names none: it starts a correlation, its own id
    await h.publish(first)

    [welcome] = await h.notifications(user)
    assert welcome.correlation_id == "req-1"
    [unrelated] = await h.notifications(other)
    assert unrelated.correlation_id == str(first.event_id)
    created = {NotificationCreated.model_validate_json(row.payload).data.user_id:
               NotificationCreated.model_validate_json(row.payload).correlation_id
               for row in await h.outbox_rows()}
    assert created == {user: "req-1", other: str(first.event_id)}  # the row's and its event's


async def test_the_same_event_twice_makes_one_notification(h: Harness) -> None:
    user = new_user()
    await h.add_contact(user, "ada@example.com")
    event = password_changed(user)

    await h.publish(event)
    await h.publish(event)

    assert [n.kind for n in await h.notifications(user)] == ["security"]
    assert len(await h.outbox_rows()) == 1
    assert h.bus.processed[Outcome.HANDLED] == 2  # handled, the second time by skipping


async def test_driver_events_notify_the_drivers_user(h: Harness) -> None:
    user = new_user()
    await h.add_contact(user, "dee@example.com")

    await h.publish(driver_registered(user))
    await h.publish(driver_status_changed(user, new="available"))

    first, second = await h.notifications(user)
    assert (first.kind, second.kind) == ("driver", "driver_status")
    assert second.title == "You are now available" and "offline" in second.body


async def test_a_missing_contact_is_asked_of_the_user_service_and_kept(h: Harness) -> None:
    user = new_user()
    h.users.known[user] = ContactDetails(user, "asked@example.com", "Asked")

    await h.publish(driver_registered(user))

    assert h.users.asked == [user]
    [notification] = await h.notifications(user)
    assert notification.delivery_status == DeliveryStatus.PENDING
    assert await h.contact(user) == ContactDetails(user, "asked@example.com", "Asked")
    await h.publish(password_changed(user))
    assert h.users.asked == [user], "the kept copy answers the next time"


async def test_without_an_answer_the_notification_waits_for_the_profile(h: Harness) -> None:
    user = new_user()
    h.users.silent.add(user)

    await h.publish(registered(user))

    [welcome] = await h.notifications(user)
    assert welcome.delivery_status == DeliveryStatus.AWAITING_CONTACT
    assert welcome.next_attempt_at is None and h.wakes == []
    assert len(await h.outbox_rows()) == 1, "created all the same, with its event"

    await h.publish(profile_created(user, "late@example.com"))

    [welcome] = await h.notifications(user)
    assert welcome.delivery_status == DeliveryStatus.PENDING
    assert welcome.next_attempt_at is not None and h.wakes == [1]
    assert (await h.contact(user)) == ContactDetails(user, "late@example.com", "Ada")


async def test_an_unknown_user_waits_for_the_profile_too(h: Harness) -> None:
    user = new_user()  # the user service answers found=False

    await h.publish(password_changed(user))

    [notification] = await h.notifications(user)
    assert notification.delivery_status == DeliveryStatus.AWAITING_CONTACT
    assert await h.contact(user) is None


async def test_an_older_profile_update_never_overwrites_a_newer_one(h: Harness) -> None:
    user = new_user()

    await h.publish(profile_created(user, "v1@example.com", at=T0))
    await h.publish(profile_updated(user, "v3@example.com", at=later(20)))
    await h.publish(profile_updated(user, "v2@example.com", at=later(10)))  # overtaken

    assert (await h.contact(user)).email == "v3@example.com"  # type: ignore[union-attr]
    await h.publish(profile_updated(user, "v4@example.com", at=later(30)))
    assert (await h.contact(user)).email == "v4@example.com"  # type: ignore[union-attr]
    assert await h.count(Contact) == 1


async def test_any_profile_event_supersedes_a_copy_from_a_reply(h: Harness) -> None:
    user = new_user()
    h.users.known[user] = ContactDetails(user, "replied@example.com", "Replied")
    await h.publish(driver_registered(user))  # the copy now comes from the reply

    await h.publish(profile_created(user, "event@example.com", at=T0))

    assert (await h.contact(user)).email == "event@example.com"  # type: ignore[union-attr]


async def test_a_profile_event_releases_only_its_users_waiting_notifications(
        h: Harness) -> None:
    waiting, other = new_user(), new_user()
    h.users.silent.update({waiting, other})
    await h.publish(registered(waiting))
    await h.publish(registered(other))

    await h.publish(profile_created(waiting, "w@example.com"))

    [mine], [theirs] = await h.notifications(waiting), await h.notifications(other)
    assert mine.delivery_status == DeliveryStatus.PENDING
    assert theirs.delivery_status == DeliveryStatus.AWAITING_CONTACT
    assert await h.count(Notification) == 2
