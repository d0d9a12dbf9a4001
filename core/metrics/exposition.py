"""`/metrics`: the process's counters and histograms, and the app's scrape-time gauges.

One worker: the counters live in the process (prometheus-client's default registry).
Several uvicorn workers (`core.serving.run(workers=N)`): `prepare_multiprocess` gives them a
fresh `PROMETHEUS_MULTIPROC_DIR` before they start, each worker's counters go to files
there, and any worker answering a scrape sums them all. The gauges read at scrape time
(consumers, breakers, the database) are the answering worker's own; the database ones are
the same whichever answers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

from core.metrics.collectors import Snapshot
from core.metrics.families import MULTIPROC_ENV

PATH = "/metrics"


def prepare_multiprocess() -> Path:
    """Before starting workers: the directory they share (`PROMETHEUS_MULTIPROC_DIR`, or a
    new temporary one, set in the environment the workers inherit), emptied of an earlier
    run's files, which would otherwise be summed in as if this run had counted them."""
    given = os.environ.get(MULTIPROC_ENV)
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="kfm-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def process_output() -> bytes:
    """The process's counters and histograms: every worker's when in multiprocess mode."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


class Exposition:
    """An app's `/metrics`: the process's families, then its own collectors. Snapshots
    (database, registry) are refreshed before they are read."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collectors: list[Collector] = []

    def add(self, *collectors: Collector) -> None:
        for collector in collectors:
            self.registry.register(collector)
            self._collectors.append(collector)

    def clear(self) -> None:
        """Drop the app's collectors (at shutdown: the parts they read are closed)."""
        for collector in self._collectors:
            self.registry.unregister(collector)
        self._collectors.clear()

    async def render(self) -> bytes:
        for collector in list(self._collectors):
            if isinstance(collector, Snapshot):
                await collector.refresh()
        return process_output() + generate_latest(self.registry)

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.get(PATH, include_in_schema=False)
        async def metrics() -> Response:
            return Response(await self.render(), media_type=CONTENT_TYPE_LATEST)

        return router
