"""A clock a test moves by hand, for code that takes `clock=`: time-to-live and rate-limit
cases pass in an instant instead of sleeping through them."""

from __future__ import annotations

import time


class Clock:
    """Stands still until `advance()` (or a write to `now`); starts at the monotonic time."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.monotonic() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
