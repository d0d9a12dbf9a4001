"""A `ServiceRegistry` that answers from a fixed map: the client's tests need instances, not a
registry backend (those are tested on their own)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from core.service_registry import Change, Instance, ServiceRegistry


class FixedRegistry(ServiceRegistry):
    """Answers `discover` from a fixed map of service name -> instance urls (the real
    backends are tested on their own; here only the client is under test)."""

    def __init__(self, services: Mapping[str, list[str]]) -> None:
        self.services = {
            name: [Instance(name, f"{name}-{n}", url) for n, url in enumerate(urls)]
            for name, urls in services.items()}

    @classmethod
    def from_spec(cls, spec: str) -> FixedRegistry:
        """`"b=http://h:1,http://h:2;c=http://h:3"` (the caller process reads it from env)."""
        services: dict[str, list[str]] = {}
        for part in filter(None, spec.split(";")):
            name, _, urls = part.partition("=")
            services[name] = [u for u in urls.split(",") if u]
        return cls(services)

    async def register(self, instance: Instance) -> None: ...

    async def heartbeat(self) -> None: ...

    async def deregister(self) -> None: ...

    async def discover(self, service: str) -> list[Instance]:
        return list(self.services.get(service, []))

    async def watch(self, service: str | None = None) -> AsyncIterator[Change]:
        for name, instances in self.services.items():
            yield Change(name, tuple(instances))
