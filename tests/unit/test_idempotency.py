import asyncio

import pytest

from core.messaging.idempotency import InMemoryIdempotencyStore


async def test_concurrent_duplicates_run_the_work_once() -> None:
    store, runs = InMemoryIdempotencyStore(), []

    async def work(_: object) -> None:
        runs.append(1)
        await asyncio.sleep(0.05)

    results = await asyncio.gather(*[store.run_once("e1", "h", work) for _ in range(5)])
    assert runs == [1]
    assert sorted(results) == [False, False, False, False, True]


async def test_a_failed_first_run_lets_the_waiting_duplicate_run() -> None:
    store, attempts = InMemoryIdempotencyStore(), []

    async def work(_: object) -> None:
        attempts.append(1)
        await asyncio.sleep(0.01)
        if len(attempts) == 1:
            raise RuntimeError("first try fails")

    first = asyncio.create_task(store.run_once("e1", "h", work))
    second = asyncio.create_task(store.run_once("e1", "h", work))
    with pytest.raises(RuntimeError):
        await first
    assert await second is True
    assert len(attempts) == 2 and store.seen("e1", "h")


async def test_memory_is_bounded_oldest_forgotten_first() -> None:
    store = InMemoryIdempotencyStore(max_entries=3)

    async def work(_: object) -> None:
        return None

    for i in range(5):
        await store.run_once(f"e{i}", "h", work)
    assert [store.seen(f"e{i}", "h") for i in range(5)] == [False, False, True, True, True]
    assert await store.run_once("e4", "h", work) is False
