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

Health alone never empties a service (Envoy's panic threshold): when fewer than
`panic_threshold` of a service's instances pass, the checks are more likely wrong about them
all (one shared dependency away, a check too strict) than every instance is broken, so the
balancing goes across all of them, each still guarded by its breaker.

Each check's `timeout` runs from when it holds a connection: at most `max_concurrent` checks
are in flight, and waiting for a turn costs a check nothing, however many instances there are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import aiohttp

from core.service_registry import Change, Instance, ServiceRegistry
from core.tasks import cancel_and_wait, periodically
from gateway.routes.table import LEGACY

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


PANIC_THRESHOLD = 0.5
"""Below this share of a service's instances passing, none is left out (Envoy's default)."""
CHECK_TIMEOUT = 3.0
"""Longer than a service's own checks take (2 s each, `core.health_check`): a service that
waits out a dependency that is away answers `degraded` in time rather than be taken out."""
MAX_CONCURRENT = 64
"""Checks in flight at once (each on its own connection)."""


class HealthChecker:
    """Active checks of every instance of `services()`; `healthy(instance)` per request."""

    def __init__(self, registry: ServiceRegistry, services: Callable[[], Iterable[str]], *,
                 interval: float = 5.0, timeout: float = CHECK_TIMEOUT, unhealthy_after: int = 2,
                 panic_threshold: float = PANIC_THRESHOLD,
                 max_concurrent: int = MAX_CONCURRENT) -> None:
        if interval <= 0 or timeout <= 0 or unhealthy_after < 1 or max_concurrent < 1:
            raise ValueError("interval and timeout must be > 0, unhealthy_after and "
                             "max_concurrent >= 1")
        if not 0 <= panic_threshold <= 1:
            raise ValueError("panic_threshold is a share of instances, from 0 to 1")
        self._registry = registry
        self._services = services
        self.interval = interval
        self.timeout = timeout
        self.unhealthy_after = unhealthy_after
        self.panic_threshold = panic_threshold
        self._turns = asyncio.Semaphore(max_concurrent)
        self._health: dict[tuple[str, str], _Health] = {}
        self._panic: dict[str, str] = {}  # service -> why all its instances are balanced
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def healthy(self, instance: Instance) -> bool:
        health = self._health.get((instance.instance_id, instance.url))
        return health is None or health.healthy or instance.service in self._panic

    def unhealthy(self) -> list[str]:
        """`instance@url` of every instance whose checks fail now (for /health/ready)."""
        return sorted(f"{key[0]}@{key[1]}" for key, h in self._health.items() if not h.healthy)

    def panicking(self) -> dict[str, str]:
        """Services balanced across all their instances because too few pass, and why."""
        return dict(self._panic)

    async def start(self) -> None:
        if self._task is None:
            # No pool limit and no session timeout: `_turns` bounds the checks in flight,
            # and each is timed from when it has its turn (`_check`).
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True))
            # A registry hiccup must not end the checks for good: logged, next round.
            self._task = asyncio.create_task(
                periodically(self.check_all, self.interval, log=log,
                             failed="upstream health checks failed"),
                name="gateway-health-checks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def check_all(self) -> None:
        """One round: check every instance of every routed service at once."""
        instances: list[Instance] = []
        for service in sorted(set(self._services()) - {LEGACY}):
            instances += await self._registry.discover(service)
        results = await asyncio.gather(*(self._check(i) for i in instances))
        seen = set()
        passing: dict[str, list[bool]] = {}
        for instance, error in zip(instances, results, strict=True):
            key = (instance.instance_id, instance.url)
            seen.add(key)
            health = self._health.setdefault(key, _Health())
            self._record(instance, health, error)
            passing.setdefault(instance.service, []).append(health.healthy)
        for key in set(self._health) - seen:  # gone from the registry: forget
            del self._health[key]
        self._judge(passing)

    def _judge(self, passing: dict[str, list[bool]]) -> None:
        """Per service, whether too few instances pass to leave any out."""
        panic: dict[str, str] = {}
        for service, flags in passing.items():
            ok = sum(flags)
            if ok < len(flags) and ok < self.panic_threshold * len(flags):
                panic[service] = (f"{ok} of {len(flags)} instances pass their checks, fewer "
                                  f"than {self.panic_threshold:.0%}: balancing across all")
        for service in panic.keys() - self._panic.keys():
            log.warning("upstream %s: %s", service, panic[service])
        for service in self._panic.keys() - panic.keys():
            log.warning("upstream %s: enough instances pass again; failing ones are left out",
                        service)
        self._panic = panic

    async def _check(self, instance: Instance) -> str | None:
        """None when ready, else why not."""
        assert self._session is not None
        async with self._turns:
            try:
                async with asyncio.timeout(self.timeout):
                    async with self._session.get(instance.url + READY_PATH) as response:
                        if response.status == 200:
                            return None
                        return f"{READY_PATH} answered {response.status}"
            except TimeoutError:
                return f"{READY_PATH} did not answer within {self.timeout:g}s"
            except (aiohttp.ClientError, OSError) as exc:
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
