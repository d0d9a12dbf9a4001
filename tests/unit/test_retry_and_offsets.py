import pytest

from core.messaging.offsets import OffsetTracker
from core.resilience.retry import RetryPolicy


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=6, initial_delay=0.1, max_delay=0.5, jitter=False)
    assert list(policy.delays()) == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_jitter_stays_within_the_ceiling() -> None:
    policy = RetryPolicy(max_attempts=4, initial_delay=1.0, max_delay=3.0)
    for n in (1, 2, 3):
        ceiling = min(3.0, 2.0 ** (n - 1))
        samples = [policy.delay(n) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert len(set(samples)) > 100  # really random, not a constant


@pytest.mark.parametrize(("bad", "named"), [
    ({"max_attempts": 0}, "max_attempts"),
    ({"initial_delay": -1}, "delays"),
    ({"max_delay": -1}, "delays"),
    ({"multiplier": 0.5}, "multiplier"),
])
def test_policy_rejects_nonsense(bad: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=f"^{named} must be >= "):
        RetryPolicy(**bad)  # type: ignore[arg-type]


def test_edge_values_are_allowed_no_wait_and_constant_backoff() -> None:
    assert list(RetryPolicy(max_attempts=3, max_delay=0).delays()) == [0, 0]
    constant = RetryPolicy(max_attempts=4, initial_delay=0.3, multiplier=1, jitter=False)
    assert list(constant.delays()) == [0.3, 0.3, 0.3]


async def test_call_does_not_retry_what_should_retry_refuses() -> None:
    calls = []

    async def invalid() -> None:
        calls.append(1)
        raise ValueError("bad input")

    policy = RetryPolicy(max_attempts=5, initial_delay=0,
                         should_retry=lambda exc: isinstance(exc, ConnectionError))
    with pytest.raises(ValueError):
        await policy.call(invalid)
    assert calls == [1]

    async def flaky() -> str:
        calls.append(2)
        if calls.count(2) == 1:
            raise ConnectionError("down")
        return "up"

    assert await policy.call(flaky) == "up"


async def test_call_retries_then_raises_last_error() -> None:
    calls = []

    async def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return 42

    policy = RetryPolicy(max_attempts=3, initial_delay=0, jitter=False)
    assert await policy.call(flaky) == 42
    calls.clear()
    with pytest.raises(ConnectionError):
        await RetryPolicy(max_attempts=2, initial_delay=0).call(flaky)
    assert len(calls) == 2


def test_commit_position_never_passes_an_unfinished_record() -> None:
    tracker = OffsetTracker()
    tp = ("t", 0)
    for offset in (5, 6, 7, 8):
        tracker.received(tp, offset)
    tracker.finished(tp, 7)
    tracker.finished(tp, 6)
    assert tracker.take() == {}  # 5 is still running
    tracker.finished(tp, 5)
    assert tracker.take() == {tp: 8}
    assert tracker.take() == {}  # nothing moved since
    tracker.finished(tp, 8)
    assert tracker.forget([tp]) == {tp: 9}
    assert tracker.in_flight(tp) == 0


def test_a_later_record_finishing_first_moves_nothing() -> None:
    tracker, tp = OffsetTracker(), ("t", 0)
    for offset in (1, 2, 3):
        tracker.received(tp, offset)
    tracker.finished(tp, 1)
    assert tracker.take() == {tp: 2}
    tracker.finished(tp, 3)
    assert tracker.take() == {}  # 2 is still running
    assert tracker.in_flight(tp) == 2  # 2 running, 3 done but not yet committable


def test_an_offset_delivered_again_is_in_flight_until_it_finishes_again() -> None:
    tracker, tp = OffsetTracker(), ("t", 0)
    tracker.received(tp, 5)
    tracker.finished(tp, 5)
    assert tracker.take() == {tp: 6}
    tracker.received(tp, 5)  # redelivered after a seek back
    tracker.received(tp, 6)
    tracker.finished(tp, 6)
    assert tracker.take() == {}
    tracker.finished(tp, 5)
    assert tracker.take() == {tp: 7}


def test_forgetting_partitions_without_progress_commits_nothing() -> None:
    tracker, tp = OffsetTracker(), ("t", 0)
    tracker.received(tp, 0)  # still running when revoked
    assert tracker.forget([tp, ("never-seen", 3)]) == {}
    assert tracker.in_flight(tp) == 0


def test_nothing_is_kept_once_every_record_of_a_partition_finished() -> None:
    """Records finished out of order wait in a set until the older ones finish; then they
    leave it, so a long-running consumer's bookkeeping stays as small as its in-flight."""
    from core.messaging.offsets import PartitionProgress

    progress = PartitionProgress()
    for offset in range(5):
        progress.received(offset)
    for offset in (4, 2, 3, 1, 0):
        progress.finished(offset)
    assert progress.committable == 5 and progress.in_flight == 0
    assert not progress._done
