"""The notification service as it runs: its own process on PostgreSQL and the real Kafka
broker, tokens from a real issuer. Events go in through the real producer with the envelope
the other services send; notifications come out over HTTP and through the sender (a
recording one, chosen by NOTIFICATION_SENDER). Its OpenAPI contract: test_contract.py."""

from __future__ import annotations

import uuid

import httpx
import pytest

from services.notification.senders import ContactDetails
from services.notification.tests.conftest import (
    CONTACT_TIMEOUT,
    WAIT,
    World,
    driver_registered,
    driver_status_changed,
    later,
    new_user,
    password_changed,
    profile_created,
    profile_updated,
    registered_by_auth,
)
from tests.helpers import eventually

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]

# --- events in, notifications out ----------------------------------------------------------


async def test_a_registration_becomes_a_welcome_the_user_reads(world: World) -> None:
    user = new_user()
    await world.publish(profile_created(user, "ada@example.com"))
    await world.publish(registered_by_auth(user, "ada@example.com"))

    welcome = await world.one(user, "welcome", "sent")

    assert welcome["title"] == "Welcome aboard" and welcome["read_at"] is None
    [sent] = world.sent_to(welcome["id"])
    assert (sent["email"], sent["user_id"], sent["ok"]) == ("ada@example.com", user, True)


async def test_a_redelivered_event_creates_nothing_new(world: World) -> None:
    user = new_user()
    await world.publish(profile_created(user, "bo@example.com"))
    event = registered_by_auth(user, "bo@example.com")
    await world.publish(event)
    welcome = await world.one(user, "welcome", "sent")

    await world.publish(event)  # the same event again: as after a crash before the commit
    await world.publish(password_changed(user))  # same key, same partition: handled after it
    await world.one(user, "security")

    assert sorted(n["kind"] for n in await world.notifications(user)) == ["security", "welcome"]
    assert len(world.sent_to(welcome["id"])) == 1


async def test_driver_events_notify_the_drivers_user(world: World) -> None:
    user = new_user()
    await world.publish(profile_created(user, "dee@example.com"))
    await world.publish(driver_registered(user))
    await world.publish(driver_status_changed(user, new="available"))

    await world.one(user, "driver", "sent")
    status = await world.one(user, "driver_status", "sent")
    assert status["title"] == "You are now available"


async def test_the_contact_copy_ignores_an_older_update(world: World) -> None:
    user = new_user()
    stale = profile_updated(user, "v2@example.com", at=later(10))
    await world.publish(profile_created(user, "v1@example.com", at=later(0)))
    await world.publish(profile_updated(user, "v3@example.com", at=later(20)))
    await world.publish(stale)  # older than the one before it, delivered after it
    await eventually(lambda: world.handled(stale, "notification.contact.updated"), WAIT, 0.1,
                     what="the stale update handled", log=world.service.log)

    assert await world.contact_email(user) == "v3@example.com"
    await world.publish(password_changed(user))
    security = await world.one(user, "security", "sent")
    assert [s["email"] for s in world.sent_to(security["id"])] == ["v3@example.com"]


# --- a missing contact: request-reply, or waiting for the profile ---------------------------


async def test_without_an_answer_the_notification_waits_for_the_profile(world: World) -> None:
    user = new_user()  # no profile yet, and no user service answering
    await world.publish(driver_registered(user))

    waiting = await world.one(user, "driver", "awaiting_contact", timeout=WAIT + CONTACT_TIMEOUT)
    assert world.sent_to(waiting["id"]) == []

    await world.publish(profile_created(user, "late@example.com"))
    sent = await world.one(user, "driver", "sent")
    assert sent["id"] == waiting["id"]
    assert [s["email"] for s in world.sent_to(sent["id"])] == ["late@example.com"]


async def test_the_user_service_fills_a_missing_contact(
        world: World, stand_in_users: dict[str, ContactDetails]) -> None:
    user = new_user()
    stand_in_users[user] = ContactDetails(user, "asked@example.com", "Asked")

    await world.publish(driver_status_changed(user))

    first = await world.one(user, "driver_status")
    assert first["delivery_status"] in ("pending", "sent"), "it never waited for a profile"
    sent = await world.one(user, "driver_status", "sent")
    assert [s["email"] for s in world.sent_to(sent["id"])] == ["asked@example.com"]
    assert await world.contact_email(user) == "asked@example.com"


# --- delivery failures ----------------------------------------------------------------------


async def test_a_failing_sender_is_retried_until_the_notification_goes(world: World) -> None:
    user = new_user()
    await world.publish(profile_created(user, "flaky@example.com"))
    await world.publish(password_changed(user))

    security = await world.one(user, "security", "sent")

    assert security["delivery_attempts"] == 3
    assert [(s["attempt"], s["ok"]) for s in world.sent_to(security["id"])] == [
        (1, False), (2, False), (3, True)]


async def test_out_of_attempts_the_notification_is_kept_as_failed(world: World) -> None:
    user = new_user()
    await world.publish(profile_created(user, "broken@example.com"))
    await world.publish(password_changed(user))

    failed = await world.one(user, "security", "failed")

    assert failed["delivery_attempts"] == 3 and len(world.sent_to(failed["id"])) == 3


# --- reading and marking read ---------------------------------------------------------------


async def test_the_caller_pages_filters_and_marks_their_own(world: World) -> None:
    user, other = new_user(), new_user()
    await world.publish(profile_created(user, "pat@example.com"))
    for _ in range(3):
        await world.publish(password_changed(user))
    await eventually(lambda: _has(world, user, 3), WAIT, 0.1, what="3 notifications",
                     log=world.service.log)

    page = (await world.get(user, size=2, page=1)).json()
    assert len(page["data"]) == 2
    assert page["meta"] == {"page": 1, "size": 2, "total": 3, "pages": 2}
    newest = page["data"][0]
    token = await world.token(user)

    marked = await world.post(f"/notifications/{newest['id']}/read", token)
    assert marked.status_code == 200, marked.text
    read_at = marked.json()["data"]["read_at"]
    assert read_at is not None
    again = await world.post(f"/notifications/{newest['id']}/read", token)
    assert again.json()["data"]["read_at"] == read_at, "marking twice keeps the first time"
    unread = (await world.get(user, unread="true")).json()
    assert newest["id"] not in [n["id"] for n in unread["data"]]
    assert unread["meta"]["total"] == 2
    assert (await world.get(other)).json()["meta"]["total"] == 0


async def test_marking_someone_elses_notification_is_not_found(world: World) -> None:
    owner, intruder = new_user(), new_user()
    await world.publish(profile_created(owner, "own@example.com"))
    await world.publish(password_changed(owner))
    mine = await world.one(owner, "security")
    path = f"/notifications/{mine['id']}/read"

    theirs = await world.post(path, await world.token(intruder))
    missing = await world.post(f"/notifications/{uuid.uuid4()}/read", await world.token(owner))

    assert theirs.status_code == 404, theirs.text
    assert theirs.json() == {"error": {**missing.json()["error"], "message": theirs.json()[
        "error"]["message"]}} and theirs.json()["error"]["code"] == "not_found"
    assert (await world.one(owner, "security"))["read_at"] is None


async def test_a_service_token_named_as_a_user_reads_none_of_theirs(world: World) -> None:
    user = new_user()
    await world.publish(profile_created(user, "svc@example.com"))
    await world.publish(password_changed(user))
    mine = await world.one(user, "security")
    service = await world.token(user, kind="service")
    async with httpx.AsyncClient(base_url=world.service.url, timeout=10) as http:
        listed = await http.get("/notifications", headers={"Authorization": f"Bearer {service}"})
    marked = await world.post(f"/notifications/{mine['id']}/read", service)
    assert (listed.status_code, marked.status_code) == (403, 403), listed.text
    assert (await world.one(user, "security"))["read_at"] is None


async def test_bad_callers_are_refused(world: World) -> None:
    user = new_user()
    path = f"/notifications/{uuid.uuid4()}/read"
    good = await world.token(user)
    forged = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    elsewhere = await world.token(user, aud="another-platform")
    no_right = await world.token(user, permissions=["profile:read"])

    assert (await world.post(path, None)).status_code == 401
    assert (await world.post(path, forged)).status_code == 401
    assert (await world.post(path, elsewhere)).status_code == 401
    assert (await world.post(path, "not-a-token")).status_code == 401
    assert (await world.post(path, no_right)).status_code == 403
    malformed = await world.post("/notifications/not-a-uuid/read", await world.token(user))
    assert malformed.status_code == 422 and "notification_id" in malformed.text
    async with httpx.AsyncClient(base_url=world.service.url) as http:
        listed = await http.get("/notifications", params={"size": 1000}, headers={
            "Authorization": f"Bearer {await world.token(user)}"})
    assert listed.status_code == 422 and "size" in listed.text


async def _has(world: World, user: str, count: int) -> bool:
    return len(await world.notifications(user)) >= count
