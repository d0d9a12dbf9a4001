"""`cancel_and_wait`: the task is stopped and waited for; its error surfaces; a cancellation
of the caller is not swallowed (the trap of `suppress(CancelledError)` around the await)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from core.tasks import cancel_and_wait


async def test_cancels_and_waits_for_the_task_to_end() -> None:
    cleaned: list[str] = []

    async def work() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.01)  # clean-up that itself awaits
            cleaned.append("done")

    task = asyncio.create_task(work())
    await asyncio.sleep(0)
    await cancel_and_wait(task, None)
    assert task.cancelled() and cleaned == ["done"]
    await cancel_and_wait(task)  # a finished task is fine


async def test_an_error_the_task_ended_with_is_raised() -> None:
    async def broken() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="boom"):
        await cancel_and_wait(task)


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # takes a while to wind down

    async def stopper(task: asyncio.Task[None]) -> str:
        await cancel_and_wait(task)
        return "carried on"

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    outer = asyncio.create_task(stopper(inner))
    await asyncio.sleep(0.05)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    with contextlib.suppress(asyncio.CancelledError):
        await inner
