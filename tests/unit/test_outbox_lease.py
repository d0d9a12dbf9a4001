"""The relay lease on SQLite: one holder at a time, renewal, expiry, hand-back, and what
`keep()` reports. Against PostgreSQL (the database's clock): tests/integration/test_outbox.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select
from sqlalchemy.sql import functions

from core.db.engine import Database
from core.messaging.outbox.lease import RelayLease
from core.tasks import cancel_and_wait
from tests.helpers import eventually
from tests.outbox_service import create_schema, metadata

TTL = 0.6


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await create_schema(f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}")
    yield database
    await database.dispose()


def lease(db: Database, owner: str, name: str = "default", ttl: float = TTL) -> RelayLease:
    return RelayLease(db, metadata.tables["outbox_lease"], name=name, owner=owner, ttl=ttl)


async def test_one_holder_at_a_time_until_it_expires_or_is_handed_back(db: Database) -> None:
    first, second, third = lease(db, "first"), lease(db, "second"), lease(db, "third")
    assert await first.acquire()
    assert not await second.acquire()
    assert await first.acquire()  # renewed
    assert not await second.acquire()
    await asyncio.sleep(TTL + 0.1)
    assert await second.acquire()  # expired: taken over
    assert not await first.acquire()
    await first.release()  # not its lease any more: changes nothing
    assert not await third.acquire()
    second.holding = True
    await second.release()
    assert not second.holding
    assert await third.acquire()  # handed back: free at once


async def test_leases_of_different_names_are_independent(db: Database) -> None:
    assert await lease(db, "first", name="orders").acquire()
    assert await lease(db, "second", name="billing").acquire()
    assert not await lease(db, "second", name="orders").acquire()


async def test_renewal_moves_the_expiry_forward(db: Database) -> None:
    first, second = lease(db, "first"), lease(db, "second")
    assert await first.acquire()
    await asyncio.sleep(TTL / 2)
    assert await first.acquire()
    await asyncio.sleep(TTL / 2 + 0.1)  # past the first expiry, not the renewed one
    assert not await second.acquire()


async def test_keep_reports_winning_and_losing_and_a_lapsed_lease_is_not_valid(
    db: Database,
) -> None:
    keeper, thief = lease(db, "keeper"), lease(db, "thief")
    changes: list[bool] = []
    assert not keeper.valid
    task = asyncio.create_task(keeper.keep(lambda: changes.append(keeper.holding)))
    try:
        for _ in range(250):
            if changes:
                break
            await asyncio.sleep(0.02)
        assert changes == [True] and keeper.holding and keeper.valid
        assert keeper.held_until > time.monotonic() + TTL / 3
        keeper.held_until = time.monotonic() + TTL / 3 - 0.05  # in its last third: margin
        assert not keeper.valid
        for _ in range(60):  # the next renewal is due within a third of the TTL; allow
            if keeper.valid:  # two TTLs, for a loaded machine
                break
            await asyncio.sleep(0.02)
        assert keeper.valid and changes == [True]  # renewed, no change reported
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(TTL + 0.1)
        assert await thief.acquire()
        task = asyncio.create_task(keeper.keep(lambda: changes.append(keeper.holding)))
        for _ in range(250):
            if len(changes) > 1:
                break
            await asyncio.sleep(0.02)
        assert changes == [True, False] and not keeper.valid and keeper.held_until == 0.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_keep_survives_a_database_failure_as_not_holding(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    keeper = lease(db, "keeper", ttl=0.3)
    changes: list[bool] = []
    outcomes = iter([True, RuntimeError("database away"), True])

    async def acquire() -> bool:
        outcome = next(outcomes, True)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(keeper, "acquire", acquire)
    task = asyncio.create_task(keeper.keep(lambda: changes.append(keeper.holding)))
    try:
        for _ in range(250):
            if len(changes) >= 3:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert changes[:3] == [True, False, True]
    assert task.cancelled()


async def test_a_failing_on_change_is_logged_as_the_owner_s_and_renewals_go_on(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay's reaction to a change is its own code: if it raises, the keeper says whose
    it was and keeps renewing, so the lease is not lost to the relay's bug."""
    keeper = lease(db, "keeper", ttl=0.3)
    reactions: list[bool] = []

    def on_change() -> None:
        reactions.append(keeper.holding)
        raise RuntimeError("relay bug")

    task = asyncio.create_task(keeper.keep(on_change))
    try:
        with caplog.at_level(logging.ERROR, "core.messaging.outbox.lease"):
            await eventually(lambda: reactions, timeout=10)
            won_until = keeper.held_until
            await eventually(lambda: task.done() or keeper.held_until > won_until, timeout=10)
        assert not task.done() and keeper.holding and reactions == [True]
    finally:
        await cancel_and_wait(task)
    [failed] = [r for r in caplog.records if r.name == "core.messaging.outbox.lease"]
    assert failed.getMessage() == "outbox relay keeper: reacting to the lease failed"
    assert failed.levelno == logging.ERROR and str(failed.exc_info[1]) == "relay bug"  # type: ignore[index]


async def test_handing_back_one_lease_keeps_the_owners_others(db: Database) -> None:
    orders, billing = lease(db, "me", name="orders"), lease(db, "me", name="billing")
    assert await orders.acquire() and await billing.acquire()
    await orders.release()
    assert await lease(db, "other", name="orders").acquire()
    assert not await lease(db, "other", name="billing").acquire()


async def test_the_expiry_is_stamped_in_utc_whatever_the_machine_s_time_zone(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite keeps no zone: a local time would move every expiry by the machine's offset, so
    relays on a machine west of UTC would see a live lease as expired hours ago."""
    monkeypatch.setenv("TZ", "America/New_York")  # hours from UTC, so a local time shows
    time.tzset()
    try:
        assert await lease(db, "first").acquire()
        async with db.session() as session:
            [expires] = (await session.execute(
                select(metadata.tables["outbox_lease"].c.expires_at))).scalars().all()
    finally:
        monkeypatch.undo()
        time.tzset()
    expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    assert abs(expires - (datetime.now(UTC) + timedelta(seconds=TTL))) < timedelta(minutes=1)


def test_expiry_is_judged_by_the_database_clock_on_postgresql_and_the_process_s_on_sqlite(
) -> None:
    """Relays on several hosts share one PostgreSQL: their own clocks may disagree."""
    table = metadata.tables["outbox_lease"]
    on_postgres = RelayLease(SimpleNamespace(dialect="postgresql"), table,  # type: ignore[arg-type]
                             name="default", owner="me", ttl=TTL)
    on_sqlite = RelayLease(SimpleNamespace(dialect="sqlite"), table,  # type: ignore[arg-type]
                           name="default", owner="me", ttl=TTL)
    assert isinstance(on_postgres._clock(), functions.now)
    stamped = on_sqlite._clock()
    assert isinstance(stamped, datetime) and stamped.tzinfo is not None
    assert abs(stamped - datetime.now(UTC)) < timedelta(minutes=1)
