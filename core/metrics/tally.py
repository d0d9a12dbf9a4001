"""The per-record event metrics in plain numbers, reported at scrape time.

A handled record costs the metrics three updates (consumed, handler duration, inbox claim);
through prometheus-client each takes a lock and, for the histogram, a Python loop over the
buckets: several microseconds a record, as much again as the dispatcher's own fast path.
Here they are integer and float additions on the event loop (the only writer), turned into
the same families when Prometheus scrapes. Used outside multiprocess mode only (see
`Metrics.tallied`): there a worker's numbers must go to the shared files instead.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from core.metrics.families import CLAIMS_DOC, CONSUMED_DOC, DURATION_DOC, HANDLER_BUCKETS


class Tally:
    """One (topic, event type): its runs' durations as histogram buckets, and successes."""

    __slots__ = ("buckets", "ok", "runs", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(HANDLER_BUCKETS) + 1)  # the last one is +Inf
        self.runs = 0
        self.sum = 0.0
        self.ok = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(HANDLER_BUCKETS, seconds)] += 1
        self.runs += 1
        self.sum += seconds


class Tallies(Collector):
    """The tallies of one process, by (topic, event type) and by (group, claim outcome)."""

    def __init__(self) -> None:
        self.handlers: dict[tuple[str, str], Tally] = {}
        self.claims: dict[tuple[str, str], int] = {}

    def tally(self, key: tuple[str, str]) -> Tally:
        found = self.handlers.get(key)
        if found is None:
            found = self.handlers[key] = Tally()
        return found

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        consumed = CounterMetricFamily("kfm_events_consumed", CONSUMED_DOC,
                                       labels=("topic", "event_type"))
        durations = HistogramMetricFamily("kfm_event_handler_duration_seconds", DURATION_DOC,
                                          labels=("topic", "event_type"))
        claims = CounterMetricFamily("kfm_inbox_claims", CLAIMS_DOC, labels=("group", "outcome"))
        for key, tally in list(self.handlers.items()):
            consumed.add_metric(key, tally.ok)
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, HANDLER_BUCKETS), "+Inf"], tally.buckets,
                                    strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            durations.add_metric(key, buckets, tally.sum)
        for key, count in list(self.claims.items()):
            claims.add_metric(key, count)
        yield from (consumed, durations, claims)
