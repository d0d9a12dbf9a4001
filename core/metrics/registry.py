"""`kfm_registry_instances` per service: what the registry answers for each service this
process knows of, asked before a scrape (cached `max_age`, bounded by `timeout`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily

from core.metrics.collectors import Snapshot
from core.service_registry import ServiceRegistry

log = logging.getLogger(__name__)


class RegistrySnapshot(Snapshot):
    """`names()` are the services to count (the gateway's routed ones; a service's own
    and those it calls)."""

    def __init__(self, registry: ServiceRegistry, names: Callable[[], Iterable[str]], *,
                 timeout: float = 2.0, max_age: float = 1.0) -> None:
        super().__init__()
        self.registry = registry
        self.names = names
        self.timeout = timeout
        self.max_age = max_age
        self._read_at: float | None = None

    async def refresh(self) -> None:
        now = time.monotonic()
        if self._read_at is not None and now - self._read_at < self.max_age:
            return
        self._read_at = now
        family = GaugeMetricFamily("kfm_registry_instances",
                                   "Instances the registry knows per service.",
                                   labels=("service_name",))
        for name in sorted(set(self.names())):
            try:
                found = await asyncio.wait_for(self.registry.discover(name), self.timeout)
            except Exception as exc:
                log.warning("metrics: the registry did not answer for %s: %s", name, exc)
                continue
            family.add_metric((name,), len(found))
        self.families = [family]
