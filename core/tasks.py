"""Background tasks: `periodically(...)` runs one piece of work again and again; `await
cancel_and_wait(task)` stops a task.

`periodically` is the one "loop, sleep, catch, log" of the code base: a failing round is
logged (each time, or once per run of failures) and the next round comes after the same
interval, so an error never spins the loop; cancellation (the task's stop) is never caught.

The usual stopping idiom, `task.cancel()` then `with suppress(CancelledError): await task`,
has a trap: if the task *awaiting* is cancelled meanwhile (a shutdown timeout, a caller that
gave up), the suppress swallows that cancellation too, and the caller carries on as if nothing
happened. `cancel_and_wait` swallows only the stopped task's own cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, NoReturn

Work = Callable[[], Awaitable[object]]


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel every task given (None and finished ones are fine) and wait until each has
    ended. A task that ended with an error raises it here; a cancellation of the caller
    itself propagates."""
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    for task in live:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise


async def periodically(work: Work, interval: float, *, log: logging.Logger, failed: str,
                       first: Literal["now", "after_interval"] = "now",
                       report: Literal["each", "streak"] = "each",
                       errors: tuple[type[Exception], ...] = (Exception,),
                       level: int = logging.ERROR, traceback: bool = True,
                       resumed: str = "working again",
                       wake: asyncio.Event | None = None) -> NoReturn:
    """Await `work()` every `interval` seconds, forever: run it in a task and stop it with
    `cancel_and_wait`, which ends the wait or the round in progress.

    - `first`: the first round at once, or after one interval.
    - An exception of `errors` ends the round only: `failed` is logged at `level` (with the
      traceback, or with the exception's text after a colon), for each failing round or, with
      `report="streak"`, for the first of a run of failures only, and `"<resumed> after N
      failures"` at INFO when a round succeeds again. Any other exception ends the loop.
    - `wake`: setting this event starts the next round before the interval is over (it is
      cleared as each round starts, so a wake during a round asks for one more).
    """
    if not interval > 0:
        raise ValueError(f"interval must be positive (got {interval!r}): a loop that does not "
                         "wait spins on an error")
    failures = 0
    if first == "after_interval":
        await _pause(interval, wake)
    while True:
        if wake is not None:
            wake.clear()
        try:
            await work()
        except errors as exc:
            failures += 1
            if report == "each" or failures == 1:
                if traceback:
                    log.log(level, "%s", failed, exc_info=exc)
                else:
                    log.log(level, "%s: %s", failed, exc)
        else:
            if failures and report == "streak":
                log.info("%s after %d failures", resumed, failures)
            failures = 0
        await _pause(interval, wake)


async def _pause(interval: float, wake: asyncio.Event | None) -> None:
    if wake is None:
        await asyncio.sleep(interval)
        return
    try:
        await asyncio.wait_for(wake.wait(), interval)
    except TimeoutError:
        pass
