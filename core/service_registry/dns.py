"""The DNS backend: Kubernetes headless services, where the platform knows the instances.

Each service name maps to a DNS name through a template (`{service}.{namespace}.svc.cluster.
local` by default); its A and AAAA records are the instances, all on one port. Answers are
cached and refreshed in the background every `refresh` seconds for each service asked about,
so `discover` is a lookup after the first call. A failed refresh keeps the last answer (a DNS
hiccup must not empty the pool); a name that does not exist has no instances.
`register`, `heartbeat` and `deregister` are no-ops: readiness probes decide who is listed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from core.service_registry.base import Change, Instance, RegistryError, ServiceRegistry
from core.service_registry.watch import Watchers
from core.tasks import cancel_and_wait, periodically

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Host name and port to the addresses they resolve to; raises `socket.gaierror`."""

DEFAULT_TEMPLATE = "{service}.{namespace}.svc.cluster.local"
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


async def getaddrinfo(host: str, port: int) -> list[str]:
    """The A and AAAA addresses of `host`, through the loop's resolver (a thread, not the
    loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def check_template(template: str) -> None:
    """Raise `RegistryError` unless `template` uses `{service}` and at most `{namespace}`."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise RegistryError(f"REGISTRY_DNS_TEMPLATE {template!r}: {exc}") from None
    if "service" not in fields or fields - {"service", "namespace"}:
        raise RegistryError(f"REGISTRY_DNS_TEMPLATE {template!r} must contain {{service}} and "
                            "no placeholder but {namespace}")


class DnsRegistry(ServiceRegistry):
    """Instances from DNS, cached per service. One event loop."""

    def __init__(
        self,
        template: str = DEFAULT_TEMPLATE,
        *,
        namespace: str = "default",
        port: int = 8000,
        scheme: str = "http",
        refresh: float = 5.0,
        resolve_timeout: float = 2.0,
        resolver: Resolver = getaddrinfo,
    ) -> None:
        check_template(template)
        self._template = template
        self._namespace = namespace
        self._port = port
        self._scheme = scheme
        self.refresh = refresh
        self.resolve_timeout = resolve_timeout
        self._resolver = resolver
        self._cache: dict[str, list[Instance]] = {}
        self._watchers = Watchers(lambda: self._cache)
        self._refresher: asyncio.Task[None] | None = None

    def host(self, service: str) -> str:
        return self._template.format(service=service, namespace=self._namespace)

    async def start(self) -> None:
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_forever(),
                                                  name="registry-dns-refresh")

    async def stop(self) -> None:
        refresher, self._refresher = self._refresher, None
        await cancel_and_wait(refresher)

    async def register(self, instance: Instance) -> None:
        return None

    async def heartbeat(self) -> None:
        return None

    async def deregister(self) -> None:
        return None

    async def discover(self, service: str) -> list[Instance]:
        if service not in self._cache:
            await self.resolve(service)
        return list(self._cache.get(service, ()))

    async def watch(self, service: str | None = None) -> AsyncIterator[Change]:
        if service is not None and service not in self._cache:
            await self.resolve(service)
        async for change in self._watchers.watch(service):
            yield change

    async def resolve(self, service: str) -> None:
        """Look `service` up now and cache the answer; a failure keeps the last one."""
        host = self.host(service)
        try:
            addresses = await asyncio.wait_for(self._resolver(host, self._port),
                                               self.resolve_timeout)
        except socket.gaierror as exc:
            if exc.errno not in _NO_SUCH_NAME:
                log.warning("registry: cannot resolve %s (%s); keeping the last answer",
                            host, exc)
                self._cache.setdefault(service, [])
                return
            addresses = []
        except (TimeoutError, OSError) as exc:
            log.warning("registry: cannot resolve %s (%s); keeping the last answer", host,
                        exc or "timed out")
            self._cache.setdefault(service, [])
            return
        instances = sorted((self._instance(service, a) for a in addresses),
                           key=lambda i: i.instance_id)
        if self._cache.get(service) != instances:
            self._cache[service] = instances
            self._watchers.publish({service: instances})

    def _instance(self, service: str, address: str) -> Instance:
        host = f"[{address}]" if ":" in address else address
        where = f"{host}:{self._port}"
        return Instance(service=service, instance_id=f"{service}@{where}",
                        url=f"{self._scheme}://{where}", started_at=0.0)

    async def _refresh_forever(self) -> None:
        await periodically(self._refresh, self.refresh, first="after_interval",
                           report="streak", log=log, failed="registry: refreshing names failed",
                           resumed="registry: refreshing names again")

    async def _refresh(self) -> None:
        started = time.monotonic()
        for service in list(self._cache):
            await self.resolve(service)
        log.debug("registry: refreshed %d names in %.3fs", len(self._cache),
                  time.monotonic() - started)


