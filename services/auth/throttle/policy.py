"""The throttling rule, apart from where the counts live: pure functions of a state and a time.

Failures are counted in a window that starts at the first failure. From `slow_after` failures
on, the next attempt must wait `slow_seconds` after the last failure, doubling with each further
one (capped at `slow_max_seconds`); from `lock_after` on, nothing is tried until `lock_seconds`
after the last failure. A window that ran out, or a lock that ended, starts the count afresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """How many failures of one kind of key (`name`: account, client) are tolerated."""

    name: str
    window_seconds: float
    slow_after: int
    lock_after: int
    slow_seconds: float
    slow_max_seconds: float
    lock_seconds: float

    def __post_init__(self) -> None:
        if not 1 <= self.slow_after <= self.lock_after:
            raise ValueError("need 1 <= slow_after <= lock_after")
        if min(self.window_seconds, self.slow_seconds, self.slow_max_seconds,
               self.lock_seconds) <= 0:
            raise ValueError("throttle durations must be positive")

    @property
    def ttl_seconds(self) -> float:
        """How long a state can matter after its last failure: a store may forget it then."""
        return max(self.window_seconds, self.lock_seconds, self.slow_max_seconds)


@dataclass(frozen=True, slots=True)
class FailureState:
    """Failures of one key: how many in the current window, when it began, the last one."""

    failures: int
    window_started_at: float
    last_failure_at: float


def starts_afresh(state: FailureState, policy: ThrottlePolicy, now: float) -> bool:
    """Whether a failure at `now` begins a new count (the window ran out or the lock ended)."""
    if state.failures >= policy.lock_after:
        return now >= state.last_failure_at + policy.lock_seconds
    return now - state.window_started_at > policy.window_seconds


def after_failure(state: FailureState | None, policy: ThrottlePolicy,
                  now: float) -> FailureState:
    """The state once a failure at `now` is counted (what a store's atomic update computes)."""
    if state is None or starts_afresh(state, policy, now):
        return FailureState(1, now, now)
    return FailureState(state.failures + 1, state.window_started_at, now)


def retry_after(state: FailureState | None, policy: ThrottlePolicy, now: float) -> float:
    """Seconds before the key may try again; 0 when it may try now."""
    if state is None or starts_afresh(state, policy, now):
        return 0.0
    if state.failures >= policy.lock_after:
        wait = policy.lock_seconds
    elif state.failures >= policy.slow_after:
        doublings = state.failures - policy.slow_after
        wait = min(policy.slow_seconds * 2.0 ** min(doublings, 60), policy.slow_max_seconds)
    else:
        return 0.0
    return max(0.0, state.last_failure_at + wait - now)


def whole_seconds(seconds: float) -> int:
    """A Retry-After value: whole seconds, never 0 for a real wait (a stored time's last
    microsecond of rounding does not make 5 s into 6)."""
    return max(1, math.ceil(seconds - 1e-3))
