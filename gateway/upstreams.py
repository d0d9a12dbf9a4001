"""Where the gateway's upstreams are, and which of them are well.

`UpstreamRegistry` is the registry the gateway's service client resolves names through: the
platform's registry for services, plus the legacy monolith (`LEGACY_UPSTREAM_URL`) under the
reserved name `legacy`.

`HealthChecker` is the active half of taking a failing instance out (the passive half is the
client's breaker per instance, which only learns from traffic): every `interval` seconds it
asks each instance of every routed service for `/health/ready`. An instance that fails
`unhealthy_after` checks in a row is left out of the balancing until one check passes again.
An instance never checked yet counts as healthy: a new instance takes traffic at once, and its
breaker still guards it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import aiohttp

from core.service_registry.base import Change, Instance, ServiceRegistry
from core.tasks import cancel_and_wait
from gateway.route_table import LEGACY

log = logging.getLogger(__name__)

READY_PATH = "/health/ready"


class UpstreamRegistry(ServiceRegistry):
    """`inner`'s services, and `legacy` at `legacy_url` when there is one. The gateway only
    discovers: it registers nothing of its own through this view."""

    def __init__(self, inner: ServiceRegistry, legacy_url: str | None) -> None:
        self.inner = inner
        self._legacy = ([Instance(LEGACY, LEGACY, legacy_url, started_at=0.0)]
                        if legacy_url else [])

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def check(self) -> None:
        await self.inner.check()

    async def register(self, instance: Instance) -> None:
        await self.inner.register(instance)

    async def heartbeat(self) -> None:
        await self.inner.heartbeat()

    async def deregister(self) -> None:
        await self.inner.deregister()

    async def discover(self, service: str) -> list[Instance]:
        if service == LEGACY:
            return list(self._legacy)
        return await self.inner.discover(service)

    def watch(self, service: str | None = None) -> AsyncIterator[Change]:
        return self.inner.watch(service)


@dataclass(slots=True)
class _Health:
    failures: int = 0
    healthy: bool = True
    last_error: str = ""


class HealthChecker:
    """Active checks of every instance of `services()`; `healthy(instance)` per request."""

    def __init__(self, registry: ServiceRegistry, services: Callable[[], Iterable[str]], *,
                 interval: float = 5.0, timeout: float = 2.0, unhealthy_after: int = 2) -> None:
        if interval <= 0 or timeout <= 0 or unhealthy_after < 1:
            raise ValueError("interval and timeout must be > 0, unhealthy_after >= 1")
        self._registry = registry
        self._services = services
        self.interval = interval
        self.timeout = timeout
        self.unhealthy_after = unhealthy_after
        self._health: dict[tuple[str, str], _Health] = {}
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def healthy(self, instance: Instance) -> bool:
        health = self._health.get((instance.instance_id, instance.url))
        return health is None or health.healthy

    def unhealthy(self) -> list[str]:
        """`instance@url` of every instance taken out now (for /health/ready)."""
        return sorted(f"{key[0]}@{key[1]}" for key, h in self._health.items() if not h.healthy)

    async def start(self) -> None:
        if self._task is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=16, force_close=True))
            self._task = asyncio.create_task(self._run(), name="gateway-health-checks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:  # a registry hiccup must not end the checks for good
                log.exception("upstream health checks failed")
            await asyncio.sleep(self.interval)

    async def check_all(self) -> None:
        """One round: check every instance of every routed service at once."""
        instances: list[Instance] = []
        for service in sorted(set(self._services()) - {LEGACY}):
            instances += await self._registry.discover(service)
        results = await asyncio.gather(*(self._check(i) for i in instances))
        seen = set()
        for instance, error in zip(instances, results, strict=True):
            key = (instance.instance_id, instance.url)
            seen.add(key)
            self._record(instance, self._health.setdefault(key, _Health()), error)
        for key in set(self._health) - seen:  # gone from the registry: forget
            del self._health[key]

    async def _check(self, instance: Instance) -> str | None:
        """None when ready, else why not."""
        assert self._session is not None
        try:
            async with self._session.get(instance.url + READY_PATH) as response:
                if response.status == 200:
                    return None
                return f"{READY_PATH} answered {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{READY_PATH} failed: {exc!r}"

    def _record(self, instance: Instance, health: _Health, error: str | None) -> None:
        name = f"{instance.service} {instance.instance_id} at {instance.url}"
        if error is None:
            if not health.healthy:
                log.warning("upstream %s is ready again: back in the balancing", name)
            health.failures, health.healthy, health.last_error = 0, True, ""
            return
        health.failures += 1
        health.last_error = error
        if health.healthy and health.failures >= self.unhealthy_after:
            health.healthy = False
            log.warning("upstream %s failed %d checks in a row (%s): taken out of the "
                        "balancing", name, health.failures, error)
