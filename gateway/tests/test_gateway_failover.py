"""An upstream instance killed under load: the other instance takes the load, the breaker opens,
clients get fast 503s while nothing is up, and traffic returns when an instance is back. And
the active checks: an instance whose /health/ready fails is taken out while it still answers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from devinfra.process import free_port
from gateway.tests.harness import Gateway, Upstream, static_registry
from tests.helpers import eventually
from tests.helpers.metrics import scrape

ROUTES = """
[defaults]
rate_limit = "none"

[[routes]]
name = "svc"
prefix = "/api/svc"
service = "svc"
rewrite = "/svc"
public = true
timeout = 2.0
retries = 1
"""


class Load:
    """Clients calling the gateway until stopped; what each answer was, in order."""

    def __init__(self, http: httpx.AsyncClient, workers: int = 4) -> None:
        self.http = http
        self.answers: list[tuple[float, int, str, float]] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._call()) for _ in range(workers)]

    async def _call(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            response = await self.http.get("/api/svc/x")
            instance = response.headers.get("x-upstream", "")
            self.answers.append((started, response.status_code, instance,
                                 time.monotonic() - started))
            await asyncio.sleep(0.005)

    def since(self, moment: float) -> list[tuple[float, int, str, float]]:
        return [a for a in self.answers if a[0] >= moment]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


@pytest_asyncio.fixture(loop_scope="session")
async def pair(spawn: Callable[..., Any], tmp_path: Any
               ) -> AsyncIterator[tuple[Gateway, list[Upstream], httpx.AsyncClient]]:
    svc = [await Upstream(f"svc-{n}", free_port(), spawn).start() for n in (1, 2)]
    gateway = await Gateway(spawn, tmp_path / "gw", ROUTES, {
        "REGISTRY_STATIC": static_registry({"svc": svc})}).start()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        yield gateway, svc, http


async def test_a_killed_instance_is_bypassed_then_the_breaker_fails_fast_then_recovers(
        pair: tuple[Gateway, list[Upstream], httpx.AsyncClient],
        spawn: Callable[..., Any]) -> None:
    gateway, (first, second), http = pair
    load = Load(http)
    try:
        await eventually(lambda: len(load.answers) > 40, timeout=20, interval=0.05)
        assert {a[2] for a in load.answers} == {"svc-1", "svc-2"}

        killed = time.monotonic()
        first.kill()
        await asyncio.sleep(2.0)
        after_kill = load.since(killed)
        assert Counter(a[1] for a in after_kill) == {200: len(after_kill)}, after_kill[-20:]
        assert {a[2] for a in after_kill[len(after_kill) // 2:]} == {"svc-2"}

        second.kill()
        await eventually(lambda: any(a[1] == 503 for a in load.answers), timeout=10)
        down = time.monotonic()
        await asyncio.sleep(1.5)
        while_down = load.since(down)
        assert while_down and {a[1] for a in while_down} == {503}
        assert max(a[3] for a in while_down) < 1.0  # fast: no connection is even tried
        assert "-> open" in gateway.log.read_text()
        states = [s.value for f in text_string_to_metric_families(await scrape(gateway.url))
                  for s in f.samples if s.name == "kfm_circuit_breaker_state"
                  and s.labels["upstream"].startswith("svc@")]
        assert 2 in states, states  # open, on the gateway's /metrics

        await Upstream("svc-1", first.port, spawn).start()  # back on the same address
        back = time.monotonic()

        def recovered() -> bool:
            return any(a[1] == 200 for a in load.since(back))

        await eventually(recovered, timeout=20, interval=0.1)
        await asyncio.sleep(1.0)
    finally:
        await load.stop()
    last = load.answers[-10:]
    assert {a[1] for a in last} == {200} and {a[2] for a in last} == {"svc-1"}


async def test_an_instance_failing_its_readiness_check_is_taken_out_and_put_back(
        pair: tuple[Gateway, list[Upstream], httpx.AsyncClient]) -> None:
    _, (_, second), http = pair
    await second.set_ready(False)

    async def only_first() -> bool:
        answers = [await http.get("/api/svc/x") for _ in range(6)]
        return {a.headers["x-upstream"] for a in answers} == {"svc-1"}

    await eventually(only_first, timeout=15, interval=0.2)
    ready = (await http.get("/health/ready")).json()
    checks = {c["name"]: c for c in ready["checks"]}
    assert ready["status"] == "ready" and second.url in checks["upstreams"]["detail"]
    await second.set_ready(True)

    async def both() -> bool:
        answers = [await http.get("/api/svc/x") for _ in range(6)]
        return {a.headers["x-upstream"] for a in answers} == {"svc-1", "svc-2"}

    await eventually(both, timeout=15, interval=0.2)


async def test_a_request_that_is_not_idempotent_is_not_retried(
        pair: tuple[Gateway, list[Upstream], httpx.AsyncClient]) -> None:
    """A POST that reached an instance which then failed is not sent to the other one."""
    _, (first, second), http = pair
    failed = await http.post("/api/svc/status/502")
    assert failed.status_code == 502
    seen = [r for u in (first, second) for r in await u.seen()
            if r["path"] == "/svc/status/502"]
    assert len(seen) == 1
    retried = await http.get("/api/svc/status/502")
    assert retried.status_code == 502
    seen = [r for u in (first, second) for r in await u.seen()
            if r["path"] == "/svc/status/502"]
    assert len(seen) == 3  # the GET was tried twice (retries = 1)
