"""The `IdempotencyStore` contract, run in memory, on SQLite and on the real PostgreSQL.

Each case goes through the `store` fixture (see `store_harness.py`). A work function's
effect is written through the session the store hands it, so on a database the effect and
the inbox row can be checked to commit together, or not at all.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.contracts.store_harness import StoreHarness


def _event() -> str:
    return str(uuid.uuid4())


async def test_work_runs_once_and_a_second_call_is_skipped(store: StoreHarness) -> None:
    event = _event()

    async def work(session: Any) -> None:
        await store.effect(session, event)

    assert await store.store.run_once(event, "h", work) is True
    assert await store.store.run_once(event, "h", work) is False
    assert await store.effects(event) == 1
    assert await store.seen(event, "h")


async def test_work_that_raises_records_nothing_and_runs_again_later(
    store: StoreHarness,
) -> None:
    event, calls = _event(), []

    async def flaky(session: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("downstream away")
        await store.effect(session, event)

    with pytest.raises(ConnectionError):
        await store.store.run_once(event, "h", flaky)
    assert not await store.seen(event, "h")
    assert await store.store.run_once(event, "h", flaky) is True
    assert await store.store.run_once(event, "h", flaky) is False
    assert len(calls) == 2 and await store.effects(event) == 1


async def test_concurrent_duplicates_have_exactly_one_effect(store: StoreHarness) -> None:
    event, calls = _event(), []

    async def slow(session: Any) -> None:
        calls.append(1)
        await store.effect(session, event)
        await asyncio.sleep(0.2)  # the duplicates arrive while this one is still running

    results = await asyncio.wait_for(
        asyncio.gather(*[store.store.run_once(event, "h", slow) for _ in range(10)]), 20)
    assert sorted(results) == [False] * 9 + [True]
    assert await store.effects(event) == 1
    assert len(calls) == 1, "work ran more than once (its effect was undone, but it ran)"


async def test_a_duplicate_waiting_on_a_failing_first_run_runs_the_work(
    store: StoreHarness,
) -> None:
    event, calls = _event(), []

    async def first_fails(session: Any) -> None:
        calls.append(1)
        await asyncio.sleep(0.1)
        if len(calls) == 1:
            raise RuntimeError("first try fails")
        await store.effect(session, event)

    first = asyncio.create_task(store.store.run_once(event, "h", first_fails))
    await asyncio.sleep(0.02)  # the first is running when the duplicate comes
    second = asyncio.create_task(store.store.run_once(event, "h", first_fails))
    with pytest.raises(RuntimeError):
        await first
    assert await asyncio.wait_for(second, 20) is True
    assert len(calls) == 2 and await store.effects(event) == 1


async def test_each_handler_of_one_event_runs_once(store: StoreHarness) -> None:
    event, ran = _event(), []

    def handler(name: str) -> Any:
        async def work(session: Any) -> None:
            ran.append(name)
            await store.effect(session, event)
        return work

    for _ in range(2):
        for name in ("billing", "shipping", "email"):
            await store.store.run_once(event, name, handler(name))
    assert ran == ["billing", "shipping", "email"]
    assert await store.effects(event) == 3
    assert await store.store.run_once(_event(), "billing", handler("billing")) is True


async def test_the_record_and_the_works_writes_commit_together_or_not_at_all(
    store: StoreHarness,
) -> None:
    event, sessions = _event(), []

    async def write_then_fail(session: Any) -> None:
        sessions.append(session)
        await store.effect(session, event)
        raise RuntimeError("crash after the write, before the commit")

    async def write(session: Any) -> None:
        sessions.append(session)
        await store.effect(session, event)

    with pytest.raises(RuntimeError):
        await store.store.run_once(event, "h", write_then_fail)
    if store.transactional.supported:
        assert sessions[0] is not None
        assert not await store.seen(event, "h") and await store.effects(event) == 0
        assert await store.store.run_once(event, "h", write) is True
        assert await store.seen(event, "h") and await store.effects(event) == 1
    else:
        # The documented alternative: no session, so the store's record alone is atomic:
        # nothing recorded for the failure, and the work's own writes are its own.
        assert sessions == [None] and not await store.seen(event, "h")
        assert await store.store.run_once(event, "h", write) is True
        assert await store.seen(event, "h")


def test_each_store_states_whether_work_joins_its_transaction(store: StoreHarness) -> None:
    assert store.transactional.supported == (store.name != "memory")
    assert len(store.transactional.reason) > 20
