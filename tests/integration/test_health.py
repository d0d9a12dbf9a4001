"""`/health/ready` of a whole service built by `create_service`, against the real broker and
database: it follows Kafka away and back without a restart, degraded (still 200, still in every
balancer: the outbox keeps the writes) rather than unavailable, and a consumer that stopped on
an error it cannot recover from degrades it with the reason."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import KafkaConfig, Settings
from core.messaging.errors import ConsumerFailedError
from tests.helpers import eventually, unique
from tests.sample_service.app import service

pytestmark = pytest.mark.kafka


def _settings(tmp_path: Path, kafka_config: KafkaConfig) -> Settings:
    return Settings(environment="development", service_name="sample",
                    database_url=f"sqlite+aiosqlite:///{tmp_path / 'sample.db'}",
                    kafka_bootstrap_servers=kafka_config.bootstrap_servers,
                    kafka_consumer_group=unique("sample"))


async def _ready(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    answer = await http.get("/health/ready")
    return answer.status_code, {c["name"]: c for c in answer.json()["checks"]}


async def test_readiness_follows_kafka_away_and_back_without_a_restart(
    tmp_path: Path, kafka_config: KafkaConfig, kafka: Any
) -> None:
    app = service(_settings(tmp_path, kafka_config))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://test") as http:
        status, checks = await _ready(http)
        assert status == 200, checks
        assert {"database", "kafka"} <= set(checks)
        assert any(name.startswith("consumer:") for name in checks)
        await asyncio.to_thread(kafka.stop)
        try:
            async def degraded() -> bool:
                return (await http.get("/health/ready")).json()["status"] == "degraded"

            await eventually(degraded, timeout=30, interval=0.5)
            status, checks = await _ready(http)
            assert status == 200, checks
            assert checks["kafka"]["status"] == "degraded" and checks["kafka"]["error"]
            assert checks["database"]["status"] == "ok"
            assert (await http.get("/health/live")).status_code == 200
        finally:
            await asyncio.to_thread(kafka.restart)

        async def ready_again() -> bool:
            return (await http.get("/health/ready")).json()["status"] == "ready"

        await eventually(ready_again, timeout=60, interval=0.5)


async def test_a_failed_consumer_degrades_the_service_with_the_reason(
    tmp_path: Path, kafka_config: KafkaConfig
) -> None:
    app = service(_settings(tmp_path, kafka_config))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://test") as http:
        assert (await _ready(http))[0] == 200
        (consumer,) = app.state.runtime.bus.consumers.values()
        consumer.failure = ConsumerFailedError("Broker: Group authorization failed")
        status, checks = await _ready(http)
        assert status == 200
        degraded = [c for c in checks.values() if c["status"] != "ok"]
        assert len(degraded) == 1 and degraded[0]["status"] == "degraded"
        assert "Group authorization failed" in degraded[0]["error"]
