"""A circuit breaker: stop calling a dependency that keeps failing, and find out when it is back.

Closed, calls pass and their outcomes are counted over a sliding *time* window. Once the window
holds `min_calls` calls and the share that failed reaches `failure_rate` (or the share slower
than `slow_call_duration` reaches `slow_call_rate`), the breaker opens: calls fail at once with
`CircuitOpenError` for `open_for` seconds. Then it is half-open: `half_open_probes` calls go
through as probes, the rest still fail fast. Every probe succeeding closes it (with an empty
window); one failing, or slow, opens it again.

Why a time window rather than the last N calls: a rate over the last seconds means what it says
at any traffic. At high traffic a window of 100 calls spans a few milliseconds, so one blip
opens the breaker; at low traffic it holds failures from an hour ago that still count against an
instance that has long recovered. Buckets keep it O(buckets) per call with no timers.

Task safety: every method runs to completion without awaiting, so the state needs no lock; all
callers must share one event loop. Nothing blocks and nothing runs in the background: the open
-> half-open step happens when someone next asks. An outcome that arrives after the state it was
admitted under has changed (a slow call admitted while closed, returning after the breaker
opened) is dropped: it says nothing about the dependency as it is now.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from core.resilience.errors import CircuitOpenError

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


StateListener = Callable[[str, State, State], None]
"""Called with (breaker name, old state, new state) on every change, e.g. to update a gauge."""


def _every_error(_: Exception) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker opens and how it probes; validated at construction."""

    failure_rate: float = 0.5
    """Open when at least this share of the window's calls failed (0 < rate <= 1)."""
    slow_call_rate: float = 1.0
    """Open when at least this share of the window's calls were slow (1: only when all were)."""
    slow_call_duration: float = 5.0
    """Seconds from which a call counts as slow, whatever its outcome."""
    window: float = 10.0
    """Seconds of history the rates are computed over."""
    buckets: int = 10
    """How finely the window slides: it forgets its oldest `window / buckets` seconds at once."""
    min_calls: int = 10
    """No verdict on fewer calls than this in the window: three calls are not a rate."""
    open_for: float = 5.0
    """Seconds the breaker stays open before letting probes through."""
    half_open_probes: int = 1
    """Calls let through while half-open; all must succeed to close."""
    is_failure: Callable[[Exception], bool] = field(default=_every_error)
    """Whether an exception from the call is the dependency's failure. Return False for errors
    that prove the dependency answered (a 4xx: the caller's mistake); those count as success."""

    def __post_init__(self) -> None:
        for name in ("failure_rate", "slow_call_rate"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1]")
        if self.slow_call_duration <= 0 or self.window <= 0:
            raise ValueError("slow_call_duration and window must be > 0")
        if self.open_for < 0:
            raise ValueError("open_for must be >= 0")
        if self.buckets < 1 or self.min_calls < 1 or self.half_open_probes < 1:
            raise ValueError("buckets, min_calls and half_open_probes must be >= 1")


@dataclass(slots=True)
class _Bucket:
    epoch: int = -1
    calls: int = 0
    failures: int = 0
    slow: int = 0


class _Window:
    """Call counts over the last `span` seconds, in `buckets` slices reused in a ring, with
    running sums: a call adds to its slice and the sums, a slice that falls out of the
    window is taken off the sums, so neither `add` nor `totals` walks the ring per call."""

    def __init__(self, span: float, buckets: int) -> None:
        self._width = span / buckets
        self._ring = [_Bucket() for _ in range(buckets)]
        self._newest = -1
        self._calls = self._failures = self._slow = 0

    def _slide(self, now: float) -> _Bucket:
        """The slice of `now` (a clock gone back counts in the newest), the window moved on
        to end there."""
        epoch = int(now // self._width)
        ring = self._ring
        if epoch > self._newest:
            size = len(ring)
            for passed in range(max(self._newest + 1, epoch - size + 1), epoch + 1):
                bucket = ring[passed % size]
                if bucket.calls:
                    self._calls -= bucket.calls
                    self._failures -= bucket.failures
                    self._slow -= bucket.slow
                bucket.epoch, bucket.calls, bucket.failures, bucket.slow = passed, 0, 0, 0
            self._newest = epoch
        return ring[self._newest % len(ring)]

    def add(self, now: float, *, failed: bool, slow: bool) -> None:
        bucket = self._slide(now)
        bucket.calls += 1
        bucket.failures += failed
        bucket.slow += slow
        self._calls += 1
        self._failures += failed
        self._slow += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the window ending at `now`."""
        self._slide(now)
        return self._calls, self._failures, self._slow

    def clear(self) -> None:
        self._ring = [_Bucket() for _ in self._ring]
        self._newest = -1
        self._calls = self._failures = self._slow = 0


class Permit:
    """One admitted call. Report its end exactly once: `success()`, `failure()`, `error(exc)`
    (which decides by the breaker's `is_failure`), or `release()` when it ended without an
    outcome (cancelled). Later reports are ignored."""

    __slots__ = ("_breaker", "_done", "generation", "probe", "started")

    def __init__(self, breaker: CircuitBreaker, generation: int, started: float,
                 probe: bool) -> None:
        self._breaker = breaker
        self._done = False
        self.generation = generation
        self.started = started
        self.probe = probe

    def success(self) -> None:
        self._finish(failed=False)

    def failure(self) -> None:
        self._finish(failed=True)

    def error(self, exc: BaseException) -> None:
        if isinstance(exc, Exception):
            self._finish(failed=self._breaker.config.is_failure(exc))
        else:  # CancelledError, KeyboardInterrupt: the call was stopped, not answered
            self.release()

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._breaker._released(self)

    def _finish(self, *, failed: bool) -> None:
        if not self._done:
            self._done = True
            self._breaker._recorded(self, failed)


class CircuitBreaker:
    """Closed / open / half-open guard of one dependency (for HTTP: one upstream instance)."""

    def __init__(self, name: str, config: BreakerConfig | None = None, *,
                 clock: Clock = time.monotonic,
                 on_state_change: StateListener | None = None) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._listener = on_state_change
        self._window = _Window(self.config.window, self.config.buckets)
        self._state = State.CLOSED
        self._generation = 0
        self._open_until = 0.0
        self._probes_out = 0
        self._probes_passed = 0

    @property
    def state(self) -> State:
        self._advance(self._clock())
        return self._state

    @property
    def idle(self) -> bool:
        """Closed: forgetting this breaker (see `KeyedRegistry`) loses nothing that matters."""
        return self.state is State.CLOSED

    def retry_after(self) -> float:
        """Seconds until a call may be admitted again (0 when one would be now)."""
        now = self._clock()
        self._advance(now)
        if self._state is State.OPEN:
            return self._open_until - now
        return 0.0

    def allows(self) -> bool:
        """Whether `acquire` would admit a call now; a load balancer skips those that won't."""
        self._advance(self._clock())
        if self._state is State.CLOSED:
            return True
        return self._state is State.HALF_OPEN and self._probe_free()

    def acquire(self) -> Permit:
        """Admit one call or raise `CircuitOpenError`; the caller reports its end on the permit."""
        now = self._clock()
        self._advance(now)
        if self._state is State.OPEN:
            raise CircuitOpenError(self.name, self._open_until - now)
        probe = self._state is State.HALF_OPEN
        if probe:
            if not self._probe_free():
                raise CircuitOpenError(self.name, 0.0)
            self._probes_out += 1
        return Permit(self, self._generation, now, probe)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` if admitted, and count how it ended."""
        permit = self.acquire()
        try:
            result = await fn()
        except BaseException as exc:
            permit.error(exc)
            raise
        permit.success()
        return result

    def _probe_free(self) -> bool:
        return self._probes_out + self._probes_passed < self.config.half_open_probes

    def _advance(self, now: float) -> None:
        if self._state is State.OPEN and now >= self._open_until:
            self._move(State.HALF_OPEN)

    def _recorded(self, permit: Permit, failed: bool) -> None:
        if permit.generation != self._generation:
            return
        now = self._clock()
        slow = now - permit.started >= self.config.slow_call_duration
        if permit.probe:
            self._probes_out -= 1
            if failed or slow:
                self._open(now)
                return
            self._probes_passed += 1
            if self._probes_passed >= self.config.half_open_probes:
                self._move(State.CLOSED)
            return
        self._window.add(now, failed=failed, slow=slow)
        calls, failures, slow_calls = self._window.totals(now)
        if calls >= self.config.min_calls and (
                failures >= self.config.failure_rate * calls
                or slow_calls >= self.config.slow_call_rate * calls):
            self._open(now)

    def _released(self, permit: Permit) -> None:
        if permit.probe and permit.generation == self._generation:
            self._probes_out -= 1

    def _open(self, now: float) -> None:
        self._open_until = now + self.config.open_for
        self._move(State.OPEN)

    def _move(self, new: State) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._probes_out = self._probes_passed = 0
        self._window.clear()
        log.info("circuit %s: %s -> %s", self.name, old, new)
        if self._listener is not None:
            try:
                self._listener(self.name, old, new)
            except Exception:
                log.exception("state listener of circuit %s failed", self.name)


__all__ = ["BreakerConfig", "CircuitBreaker", "CircuitOpenError", "Permit", "State",
           "StateListener"]
