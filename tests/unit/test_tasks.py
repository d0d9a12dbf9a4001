"""`periodically`: rounds at once or after an interval, failures logged each time or once
per streak, never a busy loop, cancellation never caught. `cancel_and_wait`: the task is
stopped and waited for; its error surfaces; a cancellation of the caller is not swallowed (the
trap of `suppress(CancelledError)` around the await)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

import pytest

from core.tasks import cancel_and_wait, periodically


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


# --- periodically: the one "loop, sleep, catch, log" ---

LOG = logging.getLogger("tests.periodic")


class Rounds:
    """A piece of work that records when each round ran and fails as told; `reached(n)` is
    awaited instead of sleeping."""

    def __init__(self, outcomes: list[BaseException | None] | None = None) -> None:
        self.outcomes = list(outcomes or [])
        self.times: list[float] = []
        self._counted = asyncio.Condition()

    async def __call__(self) -> None:
        self.times.append(time.monotonic())
        async with self._counted:
            self._counted.notify_all()
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome

    async def reached(self, rounds: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._counted:
            await self._counted.wait_for(lambda: len(self.times) >= rounds)


def periodic(work: Rounds, interval: float, **options: Any) -> asyncio.Task[None]:
    options.setdefault("failed", "the round failed")
    return asyncio.create_task(periodically(work, interval, log=LOG, **options))


async def test_the_first_round_runs_at_once_or_after_one_interval() -> None:
    now, later = Rounds(), Rounds()
    started = time.monotonic()
    tasks = [periodic(now, 0.3), periodic(later, 0.3, first="after_interval")]
    try:
        await now.reached(1)
        await later.reached(1)
        assert now.times[0] - started < 0.25 <= later.times[0] - started
    finally:
        await cancel_and_wait(*tasks)


async def test_each_failing_round_is_logged_with_its_traceback_and_the_loop_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    work = Rounds([ValueError("one"), None, ValueError("two"), ValueError("three")])
    task = periodic(work, 0.01, level=logging.WARNING)
    try:
        with caplog.at_level(logging.INFO, LOG.name):
            await work.reached(5)
    finally:
        await cancel_and_wait(task)
    failures = [r for r in caplog.records if r.name == LOG.name]
    assert [(r.levelno, r.getMessage()) for r in failures] == [
        (logging.WARNING, "the round failed")] * 3
    assert [str(r.exc_info[1]) for r in failures if r.exc_info] == ["one", "two", "three"]


async def test_a_streak_of_failures_is_logged_once_and_its_end_once(
        caplog: pytest.LogCaptureFixture) -> None:
    boom = ConnectionError("away")
    work = Rounds([boom, boom, boom, None, None, boom, boom, boom])
    task = periodic(work, 0.01, report="streak", traceback=False, resumed="beats resumed")
    try:
        with caplog.at_level(logging.INFO, LOG.name):
            await work.reached(8)
    finally:
        await cancel_and_wait(task)
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOG.name] == [
        (logging.ERROR, "the round failed: away"),
        (logging.INFO, "beats resumed after 3 failures"),
        (logging.ERROR, "the round failed: away")]


async def test_the_end_of_a_streak_says_working_again_unless_told_otherwise(
        caplog: pytest.LogCaptureFixture) -> None:
    boom = ConnectionError("away")
    work = Rounds([boom, boom, None])
    task = periodic(work, 0.01, report="streak")
    try:
        with caplog.at_level(logging.INFO, LOG.name):
            await work.reached(4)
    finally:
        await cancel_and_wait(task)
    assert [r.getMessage() for r in caplog.records
            if r.levelno == logging.INFO] == ["working again after 2 failures"]


async def test_a_failing_round_waits_the_interval_like_any_other() -> None:
    """No busy loop on an error: rounds that fail at once are still an interval apart."""
    work = Rounds([RuntimeError("down")] * 10)
    task = periodic(work, 0.05)
    try:
        await work.reached(4)
    finally:
        await cancel_and_wait(task)
    gaps = [b - a for a, b in itertools.pairwise(work.times)]
    assert min(gaps) >= 0.045, gaps


async def test_stopping_cancels_a_round_in_progress_and_logs_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    inside, ended = asyncio.Event(), []

    async def slow() -> None:
        inside.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    task = asyncio.create_task(periodically(slow, 0.01, log=LOG, failed="failed"))
    with caplog.at_level(logging.DEBUG, LOG.name):
        await asyncio.wait_for(inside.wait(), 5)
        await cancel_and_wait(task)
    assert task.cancelled() and ended == ["cancelled"]
    assert not [r for r in caplog.records if r.name == LOG.name]


async def test_an_error_it_was_not_told_to_catch_ends_the_loop() -> None:
    work = Rounds([KeyError("bug")])
    task = periodic(work, 0.01, errors=(ConnectionError,))
    with pytest.raises(KeyError, match="bug"):
        await asyncio.wait_for(task, 5)
    assert len(work.times) == 1


async def test_a_wake_starts_the_next_round_before_the_interval_is_over() -> None:
    wake = asyncio.Event()
    work = Rounds()
    task = periodic(work, 60, first="after_interval", wake=wake)
    try:
        wake.set()
        await work.reached(1, timeout=5)
        wake.set()
        await work.reached(2, timeout=5)
    finally:
        await cancel_and_wait(task)


@pytest.mark.parametrize("interval", [0, -1.0])
async def test_an_interval_that_would_spin_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="interval must be positive"):  # not a loop to time out
        await asyncio.wait_for(periodically(Rounds(), interval, log=LOG, failed="failed"), 5)
