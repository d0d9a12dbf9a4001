"""Numbers from raw observations: rates and latency percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rate(count: int, seconds: float) -> float:
    """Messages per second; `count` events spread over `seconds`."""
    if seconds <= 0:
        raise ValueError(f"cannot compute a rate over {seconds}s")
    return count / seconds


def span_rate(count: int, first_ns: int, last_ns: int) -> float:
    """Throughput between the first and the last of `count` events: `count - 1` intervals,
    so the time to reach the first one (group join, first fetch) is not counted."""
    if count < 2:
        raise ValueError("need at least two events for a span rate")
    return rate(count - 1, (last_ns - first_ns) / 1e9)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, latencies_ns: Sequence[int]) -> LatencySummary:
        ms = [v / 1e6 for v in latencies_ns]
        return cls(
            count=len(ms),
            p50_ms=percentile(ms, 50),
            p90_ms=percentile(ms, 90),
            p99_ms=percentile(ms, 99),
            max_ms=max(ms),
            mean_ms=sum(ms) / len(ms),
        )
