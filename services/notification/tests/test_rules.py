"""The notification rules on SQLite and PostgreSQL: a user lists only their own, newest
first, pages and filters unread; marking read is idempotent and another user's is missing."""

from __future__ import annotations

import uuid

import pytest

from core.bases import NotFoundError, PageRequest
from core.db import Database
from services.notification.rules import NotificationService
from services.notification.tests.conftest import Harness, harness, new_user, password_changed


async def three_for(h: Harness) -> str:
    user = new_user()
    await h.add_contact(user, "ada@example.com")
    for _ in range(3):
        await h.publish(password_changed(user))
    return user


async def test_a_user_lists_their_own_newest_first_in_pages(database: Database) -> None:
    h = harness(database)
    user, other = await three_for(h), await three_for(h)
    ids = [n.id for n in reversed(await h.notifications(user))]

    async with database.session() as session:
        service = NotificationService(session)
        first = await service.list_for(user, PageRequest.of(1, 2))
        second = await service.list_for(user, PageRequest.of(2, 2))
        theirs = await service.list_for(other, PageRequest.of(1, 10))

    assert [n.id for n in first.items + second.items] == ids
    assert (first.total, first.pages) == (3, 2)
    assert not {n.id for n in theirs.items} & set(ids)


async def test_marking_read_is_idempotent_and_scoped_to_the_owner(database: Database) -> None:
    h = harness(database)
    user = await three_for(h)
    target, *_ = await h.notifications(user)

    async with database.transaction() as session:
        read = await NotificationService(session).mark_read(target.id, user)
    first_read = read.read_at
    async with database.transaction() as session:
        again = await NotificationService(session).mark_read(target.id, user)
        with pytest.raises(NotFoundError):
            await NotificationService(session).mark_read(target.id, new_user())
        with pytest.raises(NotFoundError):
            await NotificationService(session).mark_read(uuid.uuid4(), user)
        unread = await NotificationService(session).list_for(user, PageRequest(), unread=True)

    assert first_read is not None and again.read_at == first_read
    assert unread.total == 2 and target.id not in [n.id for n in unread.items]
