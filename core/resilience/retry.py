"""Retry with exponential backoff and full jitter, as a small validated policy."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


def _always(_: BaseException) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to try, and how long to wait in between.

    `max_attempts` counts the first try. The delay before retry n (1-based) is drawn uniformly
    from [0, min(max_delay, initial_delay * multiplier ** (n - 1))] ("full jitter"), which
    spreads retries of many failing callers so they do not hammer a recovering dependency
    in step. `should_retry` decides which errors are worth another try at all.
    """

    max_attempts: int = 5
    initial_delay: float = 0.1
    max_delay: float = 5.0
    multiplier: float = 2.0
    jitter: bool = True
    should_retry: Callable[[BaseException], bool] = field(default=_always)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be >= 0")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry `retry_number` (1 = the first retry)."""
        ceiling = min(self.max_delay, self.initial_delay * self.multiplier ** (retry_number - 1))
        return random.uniform(0, ceiling) if self.jitter else ceiling

    def delays(self) -> Iterator[float]:
        for n in range(1, self.max_attempts):
            yield self.delay(n)

    def retries(self, exc: BaseException, attempt: int) -> bool:
        """Whether `exc`, raised by try number `attempt`, earns another try."""
        return attempt < self.max_attempts and self.should_retry(exc)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` under this policy; re-raise its last error when attempts run out."""
        attempt = 1
        while True:
            try:
                return await fn()
            except Exception as exc:
                if not self.retries(exc, attempt):
                    raise
                await asyncio.sleep(self.delay(attempt))
                attempt += 1
