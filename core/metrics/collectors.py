"""Gauges read from the running parts at scrape time: nothing is counted on the hot path.

Each collector holds what it reads and reads it when Prometheus asks; a part that cannot
answer (stopped, never started) yields no sample, never a failed scrape. In multiprocess
mode these are the answering worker's own (its consumers, its breakers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.messaging.consumer import EventConsumer
from core.resilience import CircuitBreaker, State

log = logging.getLogger(__name__)

BREAKER_STATES: Mapping[State, float] = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


class ConsumerCollector(Collector):
    """`kfm_consumer_lag` per owned partition, in-flight records and paused partitions per
    group, from each consumer's local state (`EventConsumer.lag`: no broker call)."""

    def __init__(self, consumers: Callable[[], Mapping[str, EventConsumer]]) -> None:
        self.consumers = consumers

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("kfm_consumer_lag", "Records of a partition not yet handled "
                                "here: its end less the next record to finish.",
                                labels=("group", "topic", "partition"))
        inflight = GaugeMetricFamily("kfm_consumer_inflight_records",
                                     "Records taken but not yet done.", labels=("group",))
        paused = GaugeMetricFamily("kfm_consumer_paused_partitions",
                                   "Partitions paused by back-pressure.", labels=("group",))
        for group, consumer in self.consumers().items():
            try:
                state = consumer.lag()
            except Exception as exc:  # a client closing under us: no sample this time
                log.debug("consumer %s: no lag: %s", group, exc)
                continue
            for (topic, partition), (_, behind) in sorted(state.items()):
                if behind is not None:
                    lag.add_metric((group, topic, str(partition)), behind)
            inflight.add_metric((group,), sum(unfinished for unfinished, _ in state.values()))
            paused.add_metric((group,), consumer.paused)
        yield from (lag, inflight, paused)


class BreakerCollector(Collector):
    """`kfm_circuit_breaker_state` per upstream (0 closed, 1 half-open, 2 open): the state a
    caller would see now (an open breaker past its wait reads half-open)."""

    def __init__(self, breakers: Callable[[], Iterable[CircuitBreaker]]) -> None:
        self.breakers = breakers

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("kfm_circuit_breaker_state",
                                   "0 closed, 1 half-open, 2 open.", labels=("upstream",))
        for breaker in self.breakers():
            family.add_metric((breaker.name,), BREAKER_STATES[breaker.state])
        yield family


class InfoCollector(Collector):
    """`kfm_service_info{version}` = 1, always: an instance whose series vanish is missing."""

    def __init__(self, version: str) -> None:
        self.version = version

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("kfm_service_info", "1 while the instance runs.",
                                   labels=("version",))
        family.add_metric((self.version,), 1)
        yield family


class Snapshot(Collector):
    """Families computed by an async refresh before each scrape (`refresh`), yielded here;
    for what can only be read with I/O (the database, the registry)."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self.families

    async def refresh(self) -> None:
        raise NotImplementedError


def gauge(name: str, doc: str, value: float | None, labels: dict[str, Any] | None = None
          ) -> GaugeMetricFamily:
    """A one-sample gauge (none when `value` is None)."""
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    if value is not None:
        family.add_metric([str(v) for v in (labels or {}).values()], value)
    return family
