"""Metrics wired into a service (`create_service`) and the gateway: one call each side."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from sqlalchemy import MetaData

from core.db.engine import Database
from core.http import ServiceClient
from core.messaging.consumer import EventConsumer
from core.messaging.dispatch import RecordDispatcher
from core.metrics.collectors import BreakerCollector, ConsumerCollector, InfoCollector
from core.metrics.database import DatabaseSnapshot
from core.metrics.events import EventMetrics
from core.metrics.exposition import Exposition
from core.metrics.registry import RegistrySnapshot
from core.metrics.security import count_fetches, count_rejections
from core.security import JwksClient, TokenVerifier
from core.service_registry import ServiceRegistry

_lock = threading.Lock()
_events: EventMetrics | None = None


def event_metrics() -> EventMetrics:
    """The process's event metrics, also made the dispatchers' observer (process-wide, as
    the counters are)."""
    global _events
    with _lock:
        if _events is None:
            _events = EventMetrics()
            RecordDispatcher.observer = _events
        return _events


def count_security(verifier: TokenVerifier | None, jwks: JwksClient | None) -> None:
    if verifier is not None:
        count_rejections(verifier)
    if jwks is not None:
        count_fetches(jwks)


def watch_service(exposition: Exposition, *, version: str, service: str,
                  database: Database, metadata: MetaData,
                  consumers: Callable[[], Mapping[str, EventConsumer]],
                  client: ServiceClient, registry: ServiceRegistry) -> None:
    """A running service's gauges: its consumers, breakers, outbox and sagas, and how many
    instances the registry knows of it and of each service it calls."""

    def names() -> Iterable[str]:
        return {service, *(b.name.partition("@")[0] for b in client.breakers())}

    exposition.add(InfoCollector(version), ConsumerCollector(consumers),
                   BreakerCollector(client.breakers), DatabaseSnapshot(database, metadata),
                   RegistrySnapshot(registry, names))


def watch_gateway(exposition: Exposition, *, version: str, client: ServiceClient,
                  registry: ServiceRegistry, services: Callable[[], Iterable[str]]) -> None:
    """The gateway's gauges: its upstream breakers and the instances of each routed service."""
    exposition.add(InfoCollector(version), BreakerCollector(client.breakers),
                   RegistrySnapshot(registry, services))
