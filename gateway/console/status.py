"""What the console shows about the gateway's surroundings: each routed service's instances
with their own `/health/ready` (ready / degraded / unavailable, and which check says why) and
the gateway's view of them (in the balancing or not, breaker state); topics with partitions,
end offsets and each consumer group's lag; breakers and rate limits (gateway-local)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from core.config import KafkaConfig
from core.http import ServiceClient
from core.messaging import KafkaAdmin
from core.service_registry import Instance
from gateway.edge.rate_limit import EdgeRateLimiter
from gateway.routes import LEGACY, RouteTable
from gateway.upstreams import HealthChecker, UpstreamRegistry

READY_PATH = "/health/ready"
TIMEOUT = 2.5


@dataclass(frozen=True, slots=True)
class InstanceView:
    instance: Instance
    status: str
    """ready / degraded / unavailable, or unreachable when it did not answer."""
    why: list[str]
    """The checks that are not ok, with their errors."""
    balanced: bool
    """Whether the gateway sends it requests (its active checks pass)."""
    breaker: str


@dataclass(frozen=True, slots=True)
class TopicView:
    name: str
    partitions: int
    ends: dict[int, int]
    lag: dict[str, int] = field(default_factory=dict)
    """Consumer group -> records behind the end, summed over the partitions it committed."""


@dataclass(frozen=True, slots=True)
class BreakerView:
    name: str
    state: str
    retry_after: float


@dataclass(frozen=True, slots=True)
class LimitView:
    route: str
    prefix: str
    limit: str


class EdgeStatus:
    def __init__(self, *, table: Callable[[], RouteTable], upstreams: UpstreamRegistry,
                 health: HealthChecker, client: ServiceClient, limiter: EdgeRateLimiter,
                 kafka: KafkaConfig) -> None:
        self._table = table
        self._upstreams = upstreams
        self._health = health
        self._client = client
        self._limiter = limiter
        self._kafka = kafka

    async def services(self) -> dict[str, list[InstanceView]]:
        names = sorted(self._table().services - {LEGACY})
        found = await asyncio.gather(*(self._upstreams.discover(n) for n in names))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
            views = await asyncio.gather(*(asyncio.gather(*(self._view(http, i) for i in xs))
                                           for xs in found))
        return {name: list(v) for name, v in zip(names, views, strict=True)}

    async def _view(self, http: aiohttp.ClientSession, instance: Instance) -> InstanceView:
        status, why = await _readiness(http, instance.url + READY_PATH)
        return InstanceView(instance, status, why, self._health.healthy(instance),
                            str(self._client.breaker(instance).state))

    async def topics(self) -> list[TopicView]:
        admin = KafkaAdmin(self._kafka)
        counts, groups = await asyncio.gather(admin.topics(), admin.group_offsets())
        names = sorted(n for n in counts if not n.startswith("__"))
        ends = await admin.end_offsets({n: counts[n] for n in names})
        views = []
        for name in names:
            own = {p: end for (t, p), end in ends.items() if t == name}
            lag = {group: sum(max(0, own.get(p, 0) - at) for (t, p), at in committed.items()
                              if t == name)
                   for group, committed in groups.items()
                   if any(t == name for t, _ in committed)}
            views.append(TopicView(name, counts[name], own, lag))
        return views

    def breakers(self) -> list[BreakerView]:
        return sorted((BreakerView(b.name, str(b.state), round(b.retry_after(), 1))
                       for b in self._client.breakers()), key=lambda b: b.name)

    def limits(self) -> dict[str, Any]:
        routes = [LimitView(r.name, r.prefix, f"{r.rate_limit.limit} per {r.rate_limit.window:g} s"
                            if r.rate_limit else "none") for r in self._table().routes]
        return {"shared": self._limiter.shared, "degraded": self._limiter.degraded,
                "routes": routes}


async def _readiness(http: aiohttp.ClientSession, url: str) -> tuple[str, list[str]]:
    try:
        async with http.get(url) as response:
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return "unreachable", [f"{READY_PATH}: {type(exc).__name__} {exc}".strip()]
    if not isinstance(body, dict):
        return "unreachable", [f"{READY_PATH} answered {response.status} without a status"]
    why = [f"{c.get('name')}: {c.get('status')} {c.get('error') or c.get('detail') or ''}"
           .strip() for c in body.get("checks", []) if isinstance(c, dict)
           and c.get("status") != "ok"]
    return str(body.get("status", response.status)), why
