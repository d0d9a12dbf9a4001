"""The real system observed as a deployment would: a real Prometheus (Debian's, on
deploy/observability/'s config, started by the same `Stack` as `make up OBS=1`) scrapes every
service and the gateway, and every metric deploy/observability/metrics.txt names, which the
alert rules and the Grafana dashboards read, exists on their live `/metrics`."""

from __future__ import annotations

import asyncio

import httpx

from devinfra.process import wait_until
from tests.deploy.queries import known_metrics, queried_metrics
from tests.e2e.system import System


async def _exposed(url: str) -> set[str]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200, f"{url}/metrics: {response.status_code}"
    return {line.split()[2] for line in response.text.splitlines()
            if line.startswith("# TYPE ")}


async def test_prometheus_scrapes_every_service_and_the_gateway_up(system: System) -> None:
    prometheus = system.stack.prometheus
    assert prometheus is not None
    names = {spec.name for spec in system.stack.services}
    assert "gateway" in names and "order" in names

    def health() -> dict[str, str]:
        return {t["labels"]["service"]: t["health"] for t in prometheus.active_targets()}

    await asyncio.to_thread(wait_until, lambda: health() == dict.fromkeys(names, "up"),
                            timeout=60, interval=0.5, what="every process scraped up")
    await asyncio.to_thread(
        wait_until, lambda: {s["metric"]["service"] for s in
                             prometheus.query("kfm_service_info")} == names,
        timeout=30, interval=0.5, what="kfm_service_info from every process")


async def test_every_metric_the_rules_and_dashboards_read_is_exposed_live(
        system: System) -> None:
    exposed: set[str] = set()
    for spec in system.stack.services:
        exposed |= await _exposed(system.url(spec.name))
    known = known_metrics()
    assert queried_metrics() <= set(known)
    missing = {name for name in known if name not in exposed}
    assert not missing, f"named in metrics.txt, on no live /metrics: {sorted(missing)}"
