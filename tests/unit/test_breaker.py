"""Circuit breaker on an injected clock: no sleeps, every transition driven by hand."""

from __future__ import annotations

import asyncio

import pytest

from core.resilience import BreakerConfig, CircuitBreaker, CircuitOpenError, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(clock: Clock, events: list[tuple[State, State]] | None = None,
            **config: object) -> CircuitBreaker:
    settings = {"min_calls": 4, "failure_rate": 0.5, "window": 10.0, "buckets": 10,
                "open_for": 5.0, "slow_call_duration": 1.0, **config}
    def listener(name: str, old: State, new: State) -> None:
        assert name == "users@1"
        assert events is not None
        events.append((old, new))

    return CircuitBreaker("users@1", BreakerConfig(**settings),  # type: ignore[arg-type]
                          clock=clock, on_state_change=None if events is None else listener)


def outcomes(cb: CircuitBreaker, *failed: bool) -> None:
    for f in failed:
        permit = cb.acquire()
        permit.failure() if f else permit.success()


def trip(cb: CircuitBreaker) -> None:
    outcomes(cb, True, True, True, True)
    assert cb.state is State.OPEN


def test_opens_at_the_failure_rate_once_min_calls_are_in() -> None:
    clock = Clock()
    events: list[tuple[State, State]] = []
    cb = breaker(clock, events)
    outcomes(cb, True, True, True)  # 100% failed, but only 3 calls: no verdict
    assert cb.state is State.CLOSED
    outcomes(cb, False)  # 3 of 4 failed
    assert cb.state is State.OPEN
    assert events == [(State.CLOSED, State.OPEN)]


def test_stays_closed_below_the_rate_and_opens_exactly_at_it() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=4, failure_rate=0.5)
    outcomes(cb, True, False, False, False, False)  # 1 of 5
    assert cb.state is State.CLOSED
    outcomes(cb, True, True)  # 3 of 7
    assert cb.state is State.CLOSED
    outcomes(cb, True)  # 4 of 8: exactly the rate
    assert cb.state is State.OPEN


def test_failures_age_out_of_the_time_window() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=4, window=10.0, buckets=10)
    outcomes(cb, True, True, True)
    clock.advance(10.0)  # those three are a window ago
    outcomes(cb, True)
    assert cb.state is State.CLOSED
    outcomes(cb, False, False)
    assert cb.state is State.CLOSED
    outcomes(cb, True)  # 2 of 4 in the window
    assert cb.state is State.OPEN


def test_window_keeps_what_is_younger_than_its_span() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=4, window=10.0, buckets=10)
    outcomes(cb, True, True, True)
    clock.advance(9.0)  # still within the window
    outcomes(cb, False)
    assert cb.state is State.OPEN


def test_a_bucket_reused_for_a_later_slice_starts_from_zero() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=3, window=2.0, buckets=2, failure_rate=1.0)
    outcomes(cb, True, True)
    clock.advance(2.0)  # same ring slot, next lap
    outcomes(cb, True, False)
    assert cb.state is State.CLOSED  # 1 of 2 now, not 3 of 4


def test_slow_calls_open_it_even_when_they_succeed() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=4, slow_call_rate=0.5, slow_call_duration=1.0)
    for duration in (0.1, 1.0, 0.1):
        permit = cb.acquire()
        clock.advance(duration)
        permit.success()
    assert cb.state is State.CLOSED  # 1 slow of 3, and 3 < min_calls
    permit = cb.acquire()
    clock.advance(2.5)
    permit.success()  # 2 slow of 4
    assert cb.state is State.OPEN


def test_calls_just_under_the_slow_duration_are_not_slow() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=2, slow_call_rate=0.5, slow_call_duration=1.0)
    for _ in range(4):
        permit = cb.acquire()
        clock.advance(0.999)
        permit.success()
    assert cb.state is State.CLOSED


def test_open_fails_fast_with_when_to_retry() -> None:
    clock = Clock()
    cb = breaker(clock, open_for=5.0)
    trip(cb)
    clock.advance(2.0)
    with pytest.raises(CircuitOpenError) as refused:
        cb.acquire()
    assert refused.value.retry_after == pytest.approx(3.0)
    assert refused.value.name == "users@1"
    assert "users@1" in str(refused.value)
    assert cb.retry_after() == pytest.approx(3.0)
    assert not cb.allows()
    assert not cb.idle


def test_half_open_after_the_wait_admits_only_n_probes() -> None:
    clock = Clock()
    events: list[tuple[State, State]] = []
    cb = breaker(clock, events, half_open_probes=2)
    trip(cb)
    clock.advance(4.999)
    assert cb.state is State.OPEN
    clock.advance(0.001)
    assert cb.state is State.HALF_OPEN
    assert cb.retry_after() == 0.0
    first, second = cb.acquire(), cb.acquire()
    assert first.probe and second.probe
    assert not cb.allows()
    with pytest.raises(CircuitOpenError) as refused:
        cb.acquire()
    assert refused.value.retry_after == 0.0
    assert refused.value.name == "users@1"
    first.success()
    assert cb.state is State.HALF_OPEN  # one of two probes passed
    assert not cb.allows()  # the passed probe keeps its place: only 2 probes in all
    second.success()
    assert cb.state is State.CLOSED
    assert cb.idle
    assert events == [(State.CLOSED, State.OPEN), (State.OPEN, State.HALF_OPEN),
                      (State.HALF_OPEN, State.CLOSED)]


def test_a_failing_probe_reopens_for_another_wait() -> None:
    clock = Clock()
    cb = breaker(clock, half_open_probes=2)
    trip(cb)
    clock.advance(5.0)
    probe = cb.acquire()
    probe.failure()
    assert cb.state is State.OPEN
    assert cb.retry_after() == pytest.approx(5.0)


def test_a_slow_probe_reopens() -> None:
    clock = Clock()
    cb = breaker(clock, slow_call_duration=1.0)
    trip(cb)
    clock.advance(5.0)
    probe = cb.acquire()
    clock.advance(1.0)
    probe.success()
    assert cb.state is State.OPEN


def test_closing_starts_from_an_empty_window() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=4)
    trip(cb)
    clock.advance(5.0)
    cb.acquire().success()
    assert cb.state is State.CLOSED
    outcomes(cb, True, True, True)
    assert cb.state is State.CLOSED  # the failures that opened it are gone


def test_cancelled_probe_gives_its_slot_back() -> None:
    clock = Clock()
    cb = breaker(clock, half_open_probes=1)
    trip(cb)
    clock.advance(5.0)
    probe = cb.acquire()
    probe.error(asyncio.CancelledError())
    assert cb.state is State.HALF_OPEN
    assert cb.allows()
    cb.acquire().success()
    assert cb.state is State.CLOSED


def test_cancellation_is_not_a_failure_when_closed() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=1, failure_rate=1.0)
    cb.acquire().error(asyncio.CancelledError())
    cb.acquire().release()
    assert cb.state is State.CLOSED


def test_errors_the_config_does_not_count_are_successes() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=2, failure_rate=0.5,
                 is_failure=lambda exc: not isinstance(exc, LookupError))
    cb.acquire().error(KeyError("a 404"))
    cb.acquire().error(KeyError("a 404"))
    cb.acquire().error(KeyError("a 404"))
    assert cb.state is State.CLOSED
    cb.acquire().error(ConnectionError("refused"))
    assert cb.state is State.CLOSED  # 1 of 4
    cb.acquire().error(ConnectionError("refused"))
    assert cb.state is State.CLOSED  # 2 of 5
    cb.acquire().error(ConnectionError("refused"))
    assert cb.state is State.OPEN  # 3 of 6


def test_an_outcome_counts_once() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=2, failure_rate=0.6)
    permit = cb.acquire()
    permit.failure()
    permit.failure()
    permit.success()
    assert cb.state is State.CLOSED
    cb.acquire().success()
    cb.acquire().success()
    assert cb.state is State.CLOSED  # 1 of 3, so the repeats were not counted


def test_a_released_probe_cannot_report_afterwards() -> None:
    clock = Clock()
    cb = breaker(clock, half_open_probes=1)
    trip(cb)
    clock.advance(5.0)
    probe = cb.acquire()
    probe.release()
    probe.failure()
    assert cb.state is State.HALF_OPEN


def test_a_stale_outcome_from_before_the_change_is_ignored() -> None:
    clock = Clock()
    cb = breaker(clock, half_open_probes=1)
    late = cb.acquire()  # admitted while closed
    trip(cb)
    clock.advance(5.0)
    assert cb.state is State.HALF_OPEN
    late.failure()  # it says nothing about the dependency now
    assert cb.state is State.HALF_OPEN
    late_release = cb.acquire()
    assert cb.state is State.HALF_OPEN
    late_release.success()
    assert cb.state is State.CLOSED


def test_a_stale_release_does_not_free_a_probe_slot() -> None:
    clock = Clock()
    cb = breaker(clock, half_open_probes=2)
    trip(cb)
    clock.advance(5.0)
    old, failing = cb.acquire(), cb.acquire()
    failing.failure()  # reopened while `old` is still out
    clock.advance(5.0)
    cb.acquire()
    cb.acquire()
    assert not cb.allows()
    old.release()
    assert not cb.allows()


async def test_call_counts_results_and_exceptions() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=2, failure_rate=0.75)

    async def ok() -> str:
        return "ok"

    async def down() -> str:
        raise ConnectionError("down")

    assert await cb.call(ok) == "ok"
    with pytest.raises(ConnectionError):
        await cb.call(down)
    assert cb.state is State.CLOSED  # 1 of 2
    with pytest.raises(ConnectionError):
        await cb.call(down)
    assert cb.state is State.CLOSED  # 2 of 3
    with pytest.raises(ConnectionError):
        await cb.call(down)
    assert cb.state is State.OPEN  # 3 of 4


async def test_call_fails_fast_when_open_without_running_the_function() -> None:
    clock = Clock()
    cb = breaker(clock)
    trip(cb)
    ran = []

    async def fn() -> None:
        ran.append(1)

    with pytest.raises(CircuitOpenError):
        await cb.call(fn)
    assert ran == []


async def test_call_cancelled_mid_flight_frees_the_probe() -> None:
    clock = Clock()
    cb = breaker(clock, half_open_probes=1)
    trip(cb)
    clock.advance(5.0)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(cb.call(hang))
    await started.wait()
    assert not cb.allows()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cb.state is State.HALF_OPEN
    assert cb.allows()


def test_a_broken_listener_does_not_break_the_breaker() -> None:
    def boom(name: str, old: State, new: State) -> None:
        raise RuntimeError("metrics down")

    cb = CircuitBreaker("x", BreakerConfig(min_calls=1), clock=Clock(), on_state_change=boom)
    cb.acquire().failure()
    assert cb.state is State.OPEN


def test_zero_open_for_goes_half_open_at_once() -> None:
    clock = Clock()
    cb = breaker(clock, open_for=0.0)
    outcomes(cb, True, True, True, True)
    assert cb.state is State.HALF_OPEN


def test_defaults_are_sane() -> None:
    config = BreakerConfig()
    assert (config.failure_rate, config.slow_call_rate, config.min_calls) == (0.5, 1.0, 10)
    assert (config.window, config.buckets, config.open_for) == (10.0, 10, 5.0)
    assert (config.slow_call_duration, config.half_open_probes) == (5.0, 1)
    assert config.is_failure(ValueError())
    cb = CircuitBreaker("d")
    assert cb.state is State.CLOSED and cb.allows() and cb.config == config


@pytest.mark.parametrize(("bad", "named"), [
    ({"failure_rate": 0}, "failure_rate must be in"),
    ({"failure_rate": 1.01}, "failure_rate must be in"),
    ({"slow_call_rate": 0}, "slow_call_rate must be in"),
    ({"slow_call_rate": 2}, "slow_call_rate must be in"),
    ({"slow_call_duration": 0}, "slow_call_duration and window must be > 0"),
    ({"window": 0}, "slow_call_duration and window must be > 0"),
    ({"open_for": -1}, "open_for must be >= 0"),
    ({"buckets": 0}, "buckets, min_calls and half_open_probes must be >= 1"),
    ({"min_calls": 0}, "buckets, min_calls and half_open_probes must be >= 1"),
    ({"half_open_probes": 0}, "buckets, min_calls and half_open_probes must be >= 1"),
])
def test_config_refuses_nonsense(bad: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=f"^{named}"):
        BreakerConfig(**bad)  # type: ignore[arg-type]


def test_edge_config_values_are_allowed() -> None:
    BreakerConfig(failure_rate=1.0, slow_call_rate=1.0, open_for=0, buckets=1, min_calls=1,
                  half_open_probes=1)


def test_a_few_slow_calls_under_the_rate_keep_it_closed() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=2, slow_call_rate=0.5, slow_call_duration=1.0)
    for duration in (0.1, 0.1, 0.1, 2.0):
        permit = cb.acquire()
        clock.advance(duration)
        permit.success()
    assert cb.state is State.CLOSED  # 1 slow of 4


def test_a_passed_probe_frees_its_slot_for_the_remaining_probes() -> None:
    clock = Clock()
    cb = breaker(clock, half_open_probes=3)
    trip(cb)
    clock.advance(5.0)
    cb.acquire().success()  # one of three passed, none out
    second, third = cb.acquire(), cb.acquire()
    assert not cb.allows()
    second.success()
    assert cb.state is State.HALF_OPEN
    third.success()
    assert cb.state is State.CLOSED


def test_a_released_probe_frees_exactly_one_slot() -> None:
    clock = Clock()
    cb = breaker(clock, half_open_probes=2)
    trip(cb)
    clock.advance(5.0)
    first, _second = cb.acquire(), cb.acquire()
    first.release()
    cb.acquire()
    assert not cb.allows()


def test_a_window_near_the_clocks_start_holds_nothing_stale() -> None:
    clock = Clock()
    clock.now = 0.5
    cb = breaker(clock, min_calls=4, window=10.0, buckets=10)
    trip(cb)
    clock.advance(5.0)
    cb.acquire().success()  # closed again at t=5.5, with an empty window
    outcomes(cb, True, True, True)
    assert cb.state is State.CLOSED


def test_a_sub_second_window_is_allowed() -> None:
    assert BreakerConfig(window=0.5).window == 0.5


def test_the_window_forgets_one_slice_at_a_time_and_all_after_a_long_gap() -> None:
    clock = Clock()
    cb = breaker(clock, min_calls=4, window=10.0, buckets=10, failure_rate=0.5)
    outcomes(cb, False, False, False)
    clock.advance(5.0)
    outcomes(cb, True)  # 1 of 4
    clock.advance(5.0)  # the successes' slice is out, the failure's is not
    outcomes(cb, True, False)
    assert cb.state is State.CLOSED  # 3 calls: under min_calls
    outcomes(cb, False)
    assert cb.state is State.OPEN  # 2 of 4 (with the old slice still counted: 2 of 7)
    clock.advance(5.0 + 1.0)  # half-open after open_for; one probe closes it
    outcomes(cb, False)
    assert cb.state is State.CLOSED
    outcomes(cb, True, True, True)  # 3 calls, under min_calls
    clock.advance(100.0)  # far more than a window: nothing is left of them
    outcomes(cb, False, False, False, True)
    assert cb.state is State.CLOSED  # 1 of 4 (not 4 of 7)
