"""When a call to another service may be tried again, and after how long.

A retry is only safe when repeating the request cannot do the work twice: idempotent methods,
or a request carrying an idempotency key the upstream deduplicates on, or a request that was
never sent at all (its connection could not be opened: the client decides that one, as only
it knows how an attempt failed). It is only useful for
failures another try can fix: the connection, a timeout, and 502/503/504 (the upstream or its
proxy saying "not now"). And it must not turn an outage into a storm: the `RetryBudget` caps
retries at a share of the calls over a recent window, so when every call fails the upstream
sees about `1 + ratio` times the traffic, not `max_attempts` times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from core.resilience.retry import RetryPolicy

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({502, 503, 504})


def may_retry(method: str, idempotency_key: str | None) -> bool:
    """Whether a request may be sent again at all: idempotent, or carrying a key."""
    return method.upper() in IDEMPOTENT_METHODS or bool(idempotency_key)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta seconds or an HTTP date), or None
    when absent or unreadable. A date in the past means 0."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_delay(policy: RetryPolicy, attempt: int, retry_after: float | None,
                remaining: float) -> float | None:
    """How long to wait before try `attempt + 1`, or None when there should be none: the
    attempts are used up, or the wait (backoff, or longer if the upstream asked) would not
    leave time for another try before the deadline."""
    if attempt >= policy.max_attempts:
        return None
    delay = policy.delay(attempt)
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return delay if delay < remaining else None


@dataclass(slots=True)
class _Slice:
    epoch: int = -1
    calls: int = 0
    retries: int = 0


class RetryBudget:
    """Retries allowed: at most `min_retries + ratio * calls` over the last `window` seconds.

    `min_retries` lets a caller with little traffic still retry a blip; `ratio` bounds the
    extra load when everything fails. Task safety: one event loop, no awaits.
    """

    def __init__(self, ratio: float = 0.2, *, min_retries: int = 10, window: float = 10.0,
                 slices: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        if ratio < 0 or min_retries < 0:
            raise ValueError("ratio and min_retries must be >= 0")
        if window <= 0 or slices < 1:
            raise ValueError("window must be > 0 and slices >= 1")
        self.ratio = ratio
        self.min_retries = min_retries
        self._width = window / slices
        self._ring = [_Slice() for _ in range(slices)]
        self._clock = clock

    def record_call(self) -> None:
        """Count one call (not its retries)."""
        self._slice().calls += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget if there is one left."""
        calls, retries = self.totals()
        if retries >= self.min_retries + self.ratio * calls:
            return False
        self._slice().retries += 1
        return True

    def totals(self) -> tuple[int, int]:
        """(calls, retries) in the window."""
        newest = int(self._clock() // self._width)
        live = [s for s in self._ring if newest - len(self._ring) < s.epoch <= newest]
        return sum(s.calls for s in live), sum(s.retries for s in live)

    def _slice(self) -> _Slice:
        epoch = int(self._clock() // self._width)
        current = self._ring[epoch % len(self._ring)]
        if current.epoch != epoch:
            current.epoch, current.calls, current.retries = epoch, 0, 0
        return current
