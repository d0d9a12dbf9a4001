"""Prometheus metrics for every service and the gateway (`/metrics`).

The names and labels are the contract of the dashboards and alerts (docs/observability.md
lists them). Counters and histograms are counted where their cause is decided: the HTTP
middleware (`HttpMetrics`, per route template), the dispatcher's observer and a handler
middleware (events consumed, retried, dead-lettered, skipped, inbox claims), the producers'
delivery reports (published), the verifier and the JWKS client. Gauges are read from the
running parts when Prometheus scrapes (`collectors`, `database`, `registry`). With several
uvicorn workers, the counters are shared through prometheus-client's multiprocess mode
(`prepare_multiprocess`, called by `core.serving.run`).
"""

from core.metrics.collectors import BreakerCollector, ConsumerCollector, InfoCollector
from core.metrics.database import DatabaseSnapshot
from core.metrics.events import EventMetrics
from core.metrics.exposition import Exposition, prepare_multiprocess
from core.metrics.families import MULTIPROC_ENV, Metrics, process_metrics
from core.metrics.http import UNMATCHED, HttpMetrics, route_template
from core.metrics.registry import RegistrySnapshot
from core.metrics.security import count_fetches, count_rejections
from core.metrics.wiring import count_security, event_metrics, watch_gateway, watch_service

__all__ = [
    "MULTIPROC_ENV",
    "UNMATCHED",
    "BreakerCollector",
    "ConsumerCollector",
    "DatabaseSnapshot",
    "EventMetrics",
    "Exposition",
    "HttpMetrics",
    "InfoCollector",
    "Metrics",
    "RegistrySnapshot",
    "count_fetches",
    "count_rejections",
    "count_security",
    "event_metrics",
    "prepare_multiprocess",
    "process_metrics",
    "route_template",
    "watch_gateway",
    "watch_service",
]
