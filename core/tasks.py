"""Stopping background tasks: `await cancel_and_wait(task)`.

The usual idiom, `task.cancel()` then `with suppress(CancelledError): await task`, has a trap:
if the task *awaiting* is cancelled meanwhile (a shutdown timeout, a caller that gave up), the
suppress swallows that cancellation too, and the caller carries on as if nothing happened.
This helper swallows only the stopped task's own cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any


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
