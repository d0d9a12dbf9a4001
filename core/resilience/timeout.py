"""Timeouts that say what timed out and after how long.

`asyncio.timeout` raises a bare `TimeoutError`; several nested timeouts (a call inside a
deadline inside a request) cannot be told apart by it. `timeout` raises `CallTimeoutError`
naming the call, and only for its own expiry: a `TimeoutError` raised by the block itself or
by an outer timeout passes through unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from core.resilience.errors import CallTimeoutError

T = TypeVar("T")


class timeout:  # lower case: used like asyncio.timeout
    """`async with timeout(2.0, "GET users /users/1"):` cancels the block after 2 s and raises
    `CallTimeoutError("GET users /users/1", 2.0)`. `None` waits forever."""

    __slots__ = ("_inner", "after", "what")

    def __init__(self, seconds: float | None, what: str) -> None:
        self.after = seconds
        self.what = what
        self._inner = asyncio.timeout(seconds)

    async def __aenter__(self) -> timeout:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            await self._inner.__aexit__(exc_type, exc, tb)
        except TimeoutError as expired:
            if self._inner.expired():
                raise CallTimeoutError(self.what, self.after or 0.0) from expired
            raise

    def expired(self) -> bool:
        return self._inner.expired()


async def run_with_timeout(fn: Callable[[], Awaitable[T]], seconds: float | None,
                           what: str) -> T:
    """`await fn()` under `timeout(seconds, what)`."""
    async with timeout(seconds, what):
        return await fn()
