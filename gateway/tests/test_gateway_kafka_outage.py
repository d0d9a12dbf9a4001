"""Kafka away does not empty the gateway. Real processes: two instances of the sample service
(`create_service`, uvicorn) and the gateway, all on the Kafka registry, and the real broker
frozen (SIGSTOP). Reads and writes (which go to the outbox) keep working through the gateway for
longer than the gateway takes to drop an instance whose readiness fails; the services and the
gateway answer `degraded` with the reason, and `ready` again once the broker is back."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import KafkaConfig
from gateway.tests.harness import Gateway
from tests.helpers import eventually, unique
from tests.helpers.service import Served, Spawn, serve
from tests.integration.databases import DatabaseFactory

pytestmark = pytest.mark.kafka

ROUTES = """
[defaults]
rate_limit = "none"
retries = 0

[[routes]]
name = "widgets"
prefix = "/api/widgets"
service = "sample"
rewrite = "/widgets"
public = true
timeout = 5.0
"""
OBSERVE = 10.0
"""Seconds of outage watched: the old gateway took an instance out after two failed checks
(0.5 s apart, each waiting out the service's 2 s Kafka check), about 5 s in."""


async def _ready(url: str) -> tuple[int, str, dict[str, dict[str, Any]]]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{url}/health/ready")
    body = answer.json()
    return answer.status_code, body["status"], {c["name"]: c for c in body["checks"]}


def _widget() -> dict[str, Any]:
    return {"name": "outage", "sku": unique("W").upper()[:32], "price_cents": 100}


async def test_reads_and_outbox_writes_go_on_through_the_gateway_while_kafka_is_frozen(
        kafka: Any, spawn: Spawn, tmp_path: Path) -> None:
    kafka_config = KafkaConfig(kafka.bootstrap_servers, unique("test"), unique("group"))
    env = {"REGISTRY_TOPIC": unique("platform.registry"), "REGISTRY_TTL": "6",
           "REGISTRY_HEARTBEAT_INTERVAL": "1", "REGISTRY_GRACE": "60"}
    databases = DatabaseFactory("sqlite", tmp_path, None)
    instances: list[Served] = []
    for n in range(2):
        instances.append(await serve(spawn, "tests.integration.procs.sample_app",
                                     database_url=await databases.new(), kafka=kafka_config,
                                     env=env, output=tmp_path / f"sample-{n}.log"))
    gateway = await Gateway(spawn, tmp_path / "gw", ROUTES, {
        **env, "REGISTRY_BACKEND": "kafka",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers}).start()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as http:
        async def both_reached() -> bool:
            created = [await http.post("/api/widgets", json=_widget()) for _ in range(4)]
            assert {c.status_code for c in created} == {201}, [c.text for c in created]
            return all('"POST /widgets' in (tmp_path / f"sample-{n}.log").read_text()
                       for n in range(2))

        await eventually(both_reached, timeout=60, interval=0.5)
        assert (await _ready(gateway.url))[:2] == (200, "ready")

        os.kill(kafka.pid, signal.SIGSTOP)
        try:
            async def services_degraded() -> bool:
                answers = [await _ready(i.base_url) for i in instances]
                return all(a[1] == "degraded" for a in answers)

            await eventually(services_degraded, timeout=30, interval=0.5)
            for instance in instances:
                status, _, checks = await _ready(instance.base_url)
                assert status == 200
                assert checks["kafka"]["status"] == "degraded" and checks["kafka"]["error"]
                assert checks["database"]["status"] == "ok"

            answers: list[int] = []
            until = time.monotonic() + OBSERVE
            while time.monotonic() < until:
                answers.append((await http.post("/api/widgets", json=_widget())).status_code)
                answers.append((await http.get("/api/widgets")).status_code)
            print(f"{len(answers)} answers in {OBSERVE:g}s of outage: {Counter(answers)}")
            assert set(answers) == {200, 201}, Counter(answers)

            async def gateway_degraded() -> bool:
                return (await _ready(gateway.url))[1] == "degraded"

            await eventually(gateway_degraded, timeout=30, interval=0.5)
            status, _, checks = await _ready(gateway.url)
            assert status == 200
            assert checks["registry"]["status"] == "degraded"
            assert "out of reach" in checks["registry"]["error"]
            assert checks["upstreams"]["status"] == "ok"
        finally:
            os.kill(kafka.pid, signal.SIGCONT)

        last: dict[str, Any] = {}

        async def all_ready() -> bool:
            for url in (gateway.url, *(i.base_url for i in instances)):
                last[url] = await _ready(url)
            return all(a[:2] == (200, "ready") for a in last.values())

        try:
            await eventually(all_ready, timeout=60, interval=0.5)
        except AssertionError:
            pytest.fail(f"not ready again 60 s after the broker came back: {last}")
    gateway.stop()
