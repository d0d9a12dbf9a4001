"""The static backend: instances listed in settings, for tools, tests and fixed deployments.

`REGISTRY_STATIC="user=http://10.0.0.5:8000,http://10.0.0.6:8000;auth=http://10.0.0.7:8000"`:
services separated by `;`, each `name=url[,url...]`. The list is checked when settings load,
so a typo stops the process at start with the offending part named, not at the first call.
An empty list is valid: nothing is discovered and nothing is announced (registration off).
`register`, `heartbeat` and `deregister` are no-ops: the list is the operator's word.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

from core.service_registry.base import Change, Instance, RegistryError, ServiceRegistry
from core.service_registry.watch import Watchers

SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_static(spec: str) -> dict[str, tuple[Instance, ...]]:
    """The instances per service in `spec`. Raises `RegistryError` naming what is wrong."""
    services: dict[str, tuple[Instance, ...]] = {}
    for part in (p.strip() for p in spec.split(";")):
        if not part:
            continue
        name, sep, urls = (s.strip() for s in part.partition("="))
        if not sep:
            raise RegistryError(f"REGISTRY_STATIC: {part!r} is not service=url[,url...]")
        if not SERVICE_NAME.fullmatch(name):
            raise RegistryError(f"REGISTRY_STATIC: {name!r} is not a service name "
                                "(letters, digits, '.', '_', '-')")
        if name in services:
            raise RegistryError(f"REGISTRY_STATIC: service {name!r} is listed twice")
        instances = [_instance(name, url.strip()) for url in urls.split(",")]
        ids = [i.instance_id for i in instances]
        if len(set(ids)) != len(ids):
            raise RegistryError(f"REGISTRY_STATIC: service {name!r} lists one URL twice")
        services[name] = tuple(sorted(instances, key=lambda i: i.instance_id))
    return services


def base_url(url: str, *, where: str = "URL") -> tuple[str, str]:
    """`url` as `scheme://host:port` (no trailing slash) and its `host:port`; raises
    `RegistryError` for anything that is not an http(s) base URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RegistryError(f"{where}: {url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryError(f"{where}: {url!r} is not an http:// or https:// URL with a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise RegistryError(f"{where}: {url!r} must be scheme, host and port only")
    port = port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}", f"{host}:{port}"


def _instance(service: str, url: str) -> Instance:
    normal, address = base_url(url, where=f"REGISTRY_STATIC, service {service!r}")
    return Instance(service=service, instance_id=f"{service}@{address}", url=normal,
                    started_at=0.0)


class StaticRegistry(ServiceRegistry):
    """Answers from a fixed list; never changes, so `watch` yields the list and then waits."""

    def __init__(self, services: Mapping[str, tuple[Instance, ...]]) -> None:
        self._services = dict(services)
        self._watchers = Watchers(lambda: self._services)

    @classmethod
    def from_spec(cls, spec: str) -> StaticRegistry:
        return cls(parse_static(spec))

    async def register(self, instance: Instance) -> None:
        return None

    async def heartbeat(self) -> None:
        return None

    async def deregister(self) -> None:
        return None

    async def discover(self, service: str) -> list[Instance]:
        return list(self._services.get(service, ()))

    def watch(self, service: str | None = None) -> AsyncIterator[Change]:
        return self._watchers.watch(service)
