"""A registration travels through Kafka: auth's `auth.user_registered` makes the user's profile
in the user service and the notification service's contact copy, each exactly once, and the
same event delivered again changes nothing (services/README.md, "Topics and events")."""

from __future__ import annotations

import asyncio

from tests.e2e.databases import rows_mentioning
from tests.e2e.kafka_tools import about, handled, produce_again, records
from tests.e2e.system import System, eventually, items


async def _settled(system: System, user_id: str) -> dict[str, object]:
    """What the user and notification services hold about `user_id`, once it stops changing
    (the outbox relay marks its rows sent a moment after Kafka has them)."""
    async def snapshot() -> dict[str, object]:
        return {name: await rows_mentioning(system.database_url(name), user_id)
                for name in ("user", "notification")}

    previous = await snapshot()
    for _ in range(20):
        await asyncio.sleep(0.5)
        current = await snapshot()
        if current == previous:
            return current
        previous = current
    raise AssertionError(f"the databases kept changing: {previous}")


async def test_registration_makes_one_profile_and_one_contact_copy_and_a_redelivery_changes_nothing(
        system: System) -> None:
    account = await system.user(with_profile=True)
    bootstrap = system.bootstrap_servers

    # The profile, made from the event; announced once on user.events.
    profile = await system.profile(account)
    assert profile["email"] == account.email
    created = await eventually(lambda: records(bootstrap, "user.events", about(
        "user.profile_created", user_id=account.id)), timeout=30, interval=0.5)
    assert len(created) == 1
    assert created[0].key == account.id.encode()
    assert created[0].envelope["data"]["email"] == account.email

    # The notification service's copy of the contact (it has no route for it: its database).
    async def contact_copied() -> bool:
        rows = await rows_mentioning(system.database_url("notification"), account.id,
                                     own_only=True)
        return bool(rows)

    await eventually(contact_copied, timeout=30, interval=0.5)
    async with system.http("notification", account.access_token) as http:
        before_http = await http.get("/notifications")
    assert before_http.status_code == 200, before_http.text
    before = await _settled(system, account.id)
    own_rows = {table: rows for table, rows in before["user"].items()  # type: ignore[union-attr]
                if table.rsplit(".", 1)[-1] not in {"inbox", "outbox", "outbox_lease"}}
    assert sum(len(rows) for rows in own_rows.values()) == 1, own_rows  # one profile row

    # The very same records again, as a broker redelivery or a replay would bring them:
    # auth's event to the user service, the user service's event to whoever copies contacts.
    registered = await records(bootstrap, "auth.events",
                               about("auth.user_registered", user_id=account.id))
    assert len(registered) == 1, registered
    assert registered[0].key == account.id.encode()
    prefix = system.stack.prefix
    for record, reader in ((registered[0], "user"), (created[0], None)):
        partition, offset = await produce_again(bootstrap, record)
        # Every consumer group of this stack reading that topic has handled the copy.
        groups = await handled(bootstrap, prefix, record.topic, partition, offset)
        assert reader is None or f"{prefix}{reader}" in groups, groups

    assert await _settled(system, account.id) == before
    again = await records(bootstrap, "user.events",
                          about("user.profile_created", user_id=account.id))
    # Two records: the original and the copy produced above; no new event from the service.
    assert len(again) == 2, again
    assert {r.envelope["event_id"] for r in again} == {created[0].envelope["event_id"]}, \
        "a second profile_created for one registration"
    async with system.http("notification", account.access_token) as http:
        after_http = await http.get("/notifications")
    assert items(after_http.json()) == items(before_http.json())
