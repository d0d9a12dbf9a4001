"""The registry port: who runs which service, and where.

An `Instance` is one running copy of a service, reachable at `url`. A `ServiceRegistry`
backend announces this process's instance (`register`, kept alive by `heartbeat`, removed by
`deregister`) and answers where the others are (`discover`, `watch`). Callers depend on this
port only; the backend (Kafka by default, static or DNS where the platform already knows the
instances) is chosen by settings.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Instance:
    """One running copy of `service`, reachable at `url` (scheme, host and port, no path)."""

    service: str
    instance_id: str
    url: str
    version: str = ""
    started_at: float = field(default_factory=time.time)
    """Epoch seconds."""
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Change:
    """What `watch` yields: the live instances of `service` after a change."""

    service: str
    instances: tuple[Instance, ...]


class RegistryError(Exception):
    """The registry could not be reached or refused a write."""


class ServiceRegistry(ABC):
    """Register this process's instance and find the others.

    `discover` answers from what the backend already knows (no round trip per call for the
    Kafka backend), so callers may use it on every request. Instances come back in a stable
    order (by instance id) so that round robin over them is fair.
    """

    async def start(self) -> None:
        """Open connections and begin following the registry; idempotent."""
        return None  # backends with nothing to open keep this

    async def stop(self) -> None:
        """Deregister (if registered) and close; idempotent."""
        await self.deregister()

    async def check(self) -> None:
        """Raise `RegistryError` when `discover` cannot be trusted now (the backend lost its
        source, or has not read it yet): the service's readiness check."""
        return None  # backends that answer from settings are always ready

    @abstractmethod
    async def register(self, instance: Instance) -> None:
        """Announce `instance` as live."""

    @abstractmethod
    async def heartbeat(self) -> None:
        """Tell the registry the registered instance is still alive."""

    @abstractmethod
    async def deregister(self) -> None:
        """Remove the registered instance at once (a clean stop)."""

    @abstractmethod
    async def discover(self, service: str) -> list[Instance]:
        """The live instances of `service`, by instance id; empty when none is known."""

    @abstractmethod
    def watch(self, service: str | None = None) -> AsyncIterator[Change]:
        """Yield a `Change` each time the live instances of `service` (of every service when
        None) change, starting with the current state."""
