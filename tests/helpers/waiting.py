"""The one poller of the tests: wait for a condition that is true once something settled."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = ...,
                     interval: float = ..., *, what: str = ..., log: Path | None = ...) -> T: ...


@overload
async def eventually(check: Callable[[], T | None], timeout: float = ...,
                     interval: float = ..., *, what: str = ..., log: Path | None = ...) -> T: ...


async def eventually(check: Callable[[], object], timeout: float = 30.0,
                     interval: float = 0.05, *, what: str = "condition",
                     log: Path | None = None) -> object:
    """Wait until `check()` (plain or async) returns something true, and return it; fail with
    a clear message (naming `what`, with the tail of a service's `log`) when it never does."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value
        if time.monotonic() > deadline:
            message = f"{what} not met within {timeout}s"
            if log is not None:
                message += f"; service log tail:\n{tail(log)}"
            raise AssertionError(message)
        await asyncio.sleep(interval)


def tail(log: Path, lines: int = 40) -> str:
    """The last `lines` of a service's log file ('' before it exists)."""
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def answers_ok(url: str) -> bool:
    """Whether GET `url` answers 200 now (False while nothing listens there yet)."""
    import httpx

    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(url)).status_code == 200
    except httpx.TransportError:
        return False
