"""Bulkhead, typed timeout and the keyed registry: bounds, order, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from core.resilience import (
    Bulkhead,
    BulkheadFullError,
    CallTimeoutError,
    KeyedRegistry,
    run_with_timeout,
    timeout,
)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_full_without_a_queue_refuses_at_once() -> None:
    bulkhead = Bulkhead("users", 2)
    async with bulkhead, bulkhead:
        assert bulkhead.in_use == 2
        with pytest.raises(BulkheadFullError) as refused:
            await bulkhead.acquire()
        assert (refused.value.name, refused.value.limit, refused.value.waited) == ("users", 2, 0)
        assert "users" in str(refused.value) and "2 calls" in str(refused.value)
    assert bulkhead.in_use == 0
    assert bulkhead.idle


async def test_a_full_queue_refuses_at_once_instead_of_growing() -> None:
    bulkhead = Bulkhead("users", 1, max_waiters=2, max_wait=30)
    await bulkhead.acquire()
    waiters = [asyncio.create_task(bulkhead.acquire()) for _ in range(2)]
    await settle()
    assert bulkhead.waiting == 2
    with pytest.raises(BulkheadFullError):
        await bulkhead.acquire()  # the third waiter: refused, not queued
    assert bulkhead.waiting == 2
    bulkhead.release()
    await settle()
    assert waiters[0].done() and not waiters[1].done()
    assert bulkhead.in_use == 1  # handed over, not released and re-taken
    bulkhead.release()
    await asyncio.gather(*waiters)
    bulkhead.release()
    assert bulkhead.in_use == 0 and bulkhead.idle


async def test_waiters_are_served_in_order_and_newcomers_do_not_overtake() -> None:
    bulkhead = Bulkhead("users", 1, max_waiters=5, max_wait=30)
    order: list[int] = []

    async def call(n: int) -> None:
        async with bulkhead:
            order.append(n)
            await asyncio.sleep(0)

    await bulkhead.acquire()
    tasks = [asyncio.create_task(call(n)) for n in range(3)]
    await settle()
    bulkhead.release()
    late = asyncio.create_task(call(99))  # arrives while others wait: queues behind them
    await asyncio.gather(*tasks, late)
    assert order == [0, 1, 2, 99]
    assert bulkhead.in_use == 0


async def test_the_wait_is_bounded_in_time() -> None:
    bulkhead = Bulkhead("users", 1, max_waiters=1, max_wait=0.05)
    await bulkhead.acquire()
    with pytest.raises(BulkheadFullError) as refused:
        await bulkhead.acquire()
    assert 0 < refused.value.waited < 10
    assert (refused.value.name, refused.value.limit) == ("users", 1)
    assert bulkhead.waiting == 0
    bulkhead.release()
    assert bulkhead.idle


async def test_a_waiter_cancelled_leaks_no_slot_and_leaves_the_queue() -> None:
    bulkhead = Bulkhead("users", 1, max_waiters=3, max_wait=30)
    await bulkhead.acquire()
    waiter = asyncio.create_task(bulkhead.acquire())
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bulkhead.waiting == 0
    bulkhead.release()
    assert bulkhead.in_use == 0


async def test_a_waiter_cancelled_after_being_handed_the_slot_passes_it_on() -> None:
    bulkhead = Bulkhead("users", 1, max_waiters=3, max_wait=30)
    await bulkhead.acquire()
    first = asyncio.create_task(bulkhead.acquire())
    second = asyncio.create_task(bulkhead.acquire())
    await settle()
    bulkhead.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # got the slot `first` could not use
    assert bulkhead.in_use == 1
    bulkhead.release()
    assert bulkhead.in_use == 0 and bulkhead.waiting == 0


async def test_cancelled_waiter_dropped_by_a_release_is_not_removed_twice() -> None:
    bulkhead = Bulkhead("users", 1, max_waiters=3, max_wait=30)
    await bulkhead.acquire()
    first = asyncio.create_task(bulkhead.acquire())
    second = asyncio.create_task(bulkhead.acquire())
    await settle()
    first.cancel()
    bulkhead.release()  # skips the cancelled `first`, hands the slot to `second`
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert bulkhead.in_use == 1 and bulkhead.waiting == 0


async def test_the_slot_is_released_when_the_block_raises() -> None:
    bulkhead = Bulkhead("users", 1)
    with pytest.raises(RuntimeError):
        async with bulkhead:
            raise RuntimeError("boom")
    assert bulkhead.in_use == 0


def test_releasing_more_than_acquired_is_a_bug_and_says_so() -> None:
    with pytest.raises(RuntimeError, match="released more than acquired"):
        Bulkhead("users", 1).release()


@pytest.mark.parametrize(("args", "message"), [
    ({"limit": 0}, "limit must be >= 1"),
    ({"limit": 1, "max_waiters": -1}, "max_waiters and max_wait must be >= 0"),
    ({"limit": 1, "max_wait": -1}, "max_waiters and max_wait must be >= 0"),
])
def test_bulkhead_refuses_nonsense(args: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        Bulkhead("x", **args)  # type: ignore[arg-type]


async def test_zero_wait_means_no_queue_even_with_room_for_waiters() -> None:
    bulkhead = Bulkhead("users", 1, max_waiters=5, max_wait=0)
    await bulkhead.acquire()
    with pytest.raises(BulkheadFullError) as refused:
        await bulkhead.acquire()
    assert refused.value.waited == 0.0  # refused, not queued for no time
    assert bulkhead.waiting == 0
    default = Bulkhead("users", 3)
    assert (default.max_waiters, default.max_wait) == (0, 0.0)


# --- timeout --------------------------------------------------------------------------------


async def test_timeout_names_the_call_and_the_limit() -> None:
    with pytest.raises(CallTimeoutError) as expired:
        async with timeout(0.01, "GET users /users/1"):
            await asyncio.Event().wait()
    assert (expired.value.what, expired.value.after) == ("GET users /users/1", 0.01)
    assert str(expired.value) == "GET users /users/1 timed out after 0.01s"
    assert isinstance(expired.value, TimeoutError)


async def test_a_timeout_error_from_inside_is_not_relabelled() -> None:
    with pytest.raises(TimeoutError) as raised:
        async with timeout(30, "outer"):
            raise TimeoutError("the block's own")
    assert not isinstance(raised.value, CallTimeoutError)


async def test_the_outer_timeout_is_the_one_reported() -> None:
    with pytest.raises(CallTimeoutError) as expired:
        async with timeout(0.01, "deadline"):
            async with timeout(30, "attempt") as inner:
                await asyncio.Event().wait()
    assert expired.value.what == "deadline"
    assert not inner.expired()


async def test_a_zero_timeout_reports_zero() -> None:
    with pytest.raises(CallTimeoutError) as expired:
        async with timeout(0, "now"):
            await asyncio.sleep(1)
    assert expired.value.after == 0


async def test_no_timeout_and_a_result() -> None:
    async def answer() -> int:
        return 42

    assert await run_with_timeout(answer, None, "x") == 42
    assert await run_with_timeout(answer, 5, "x") == 42
    with pytest.raises(CallTimeoutError, match=r"^slow timed out"):
        await run_with_timeout(asyncio.Event().wait, 0.01, "slow")


# --- registry -------------------------------------------------------------------------------


def test_registry_makes_one_per_key_and_reuses_it() -> None:
    made: list[str] = []

    def factory(key: str) -> list[str]:
        made.append(key)
        return [key]

    registry: KeyedRegistry[str, list[str]] = KeyedRegistry(factory, max_size=3)
    first = registry.get("a")
    assert registry.get("a") is first
    assert made == ["a"]
    assert registry.peek("b") is None
    assert registry.peek("a") is first
    assert KeyedRegistry(str).max_size == 1024
    assert len(registry) == 1 and list(registry) == ["a"]


def test_registry_forgets_the_least_recently_used_past_its_size() -> None:
    registry: KeyedRegistry[str, str] = KeyedRegistry(str.upper, max_size=2)
    registry.get("a")
    registry.get("b")
    registry.get("a")  # a is now the most recent
    registry.get("c")
    assert list(registry) == ["a", "c"]
    assert len(registry) == 2


def test_registry_prefers_forgetting_idle_entries() -> None:
    busy = {"a"}
    registry: KeyedRegistry[str, str] = KeyedRegistry(
        lambda k: k, max_size=2, idle=lambda v: v not in busy)
    registry.get("a")
    registry.get("b")
    registry.get("c")
    assert list(registry) == ["a", "c"]  # b went although a was older
    busy.update("ac")
    registry.get("d")  # nothing idle: the oldest goes, the bound holds
    assert list(registry) == ["c", "d"]


def test_registry_refuses_no_room() -> None:
    with pytest.raises(ValueError, match=r"^max_size must be >= 1$"):
        KeyedRegistry(str, max_size=0)
    one: KeyedRegistry[str, str] = KeyedRegistry(str, max_size=1)
    one.get("a")
    one.get("b")
    assert list(one) == ["b"]
