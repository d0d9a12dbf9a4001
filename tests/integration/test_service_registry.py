"""The Kafka registry across real processes: two instances of the sample service (uvicorn,
`create_service`) register on start; a third party (this test) discovers both; a SIGKILLed
one drops out within the TTL and gets a tombstone after the grace period; a SIGTERMed one
deregisters on its way out (its tombstone is in the topic, written by itself). And the broker
away for longer than the TTL: heartbeats fail, are logged once, and resume on their own, and
the instances known stay discoverable meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import KafkaConfig
from core.messaging.kafka_client import read_topic
from core.service_registry.kafka import kafka_registry
from core.service_registry.trust import RecordTrust
from tests.helpers import eventually, unique
from tests.helpers.service import Served, Spawn, serve
from tests.integration.databases import DatabaseFactory

TTL, BEAT, GRACE = 3.0, 0.5, 6.0


async def _urls(registry: object) -> set[str]:
    return {i.url for i in await registry.discover("sample")}  # type: ignore[attr-defined]


async def test_instances_register_crash_out_within_the_ttl_and_leave_cleanly(
    kafka_config: KafkaConfig, spawn: Spawn, tmp_path: Path
) -> None:
    topic = unique("platform.registry")
    env = {"REGISTRY_TOPIC": topic, "REGISTRY_TTL": str(TTL),
           "REGISTRY_HEARTBEAT_INTERVAL": str(BEAT), "REGISTRY_GRACE": str(GRACE),
           "SERVICE_VERSION": "9.9.9"}
    databases = DatabaseFactory("sqlite", tmp_path, None)

    async def start(name: str) -> Served:
        return await serve(spawn, "tests.integration.procs.sample_app",
                           database_url=await databases.new(), kafka=kafka_config, env=env,
                           output=tmp_path / f"{name}.log")

    crashing, stopping = await asyncio.gather(start("crashing"), start("stopping"))
    reader = kafka_registry(dataclasses.replace(kafka_config, client_id=unique("reader")),
                            ttl=TTL, heartbeat_interval=BEAT, grace=GRACE, topic=topic)
    await reader.start()
    try:
        await eventually(lambda: _both(reader, crashing, stopping), timeout=30, interval=0.2)
        found = {i.url: i for i in await reader.discover("sample")}
        assert {i.version for i in found.values()} == {"9.9.9"}
        crashed_id = found[crashing.base_url].instance_id
        stopped_id = found[stopping.base_url].instance_id
        async with httpx.AsyncClient(base_url=stopping.base_url) as http:
            ready = (await http.get("/health/ready")).json()
        assert {c["name"]: c["status"] for c in ready["checks"]}["registry"] == "ok"

        # SIGKILL: no goodbye; the heartbeats stop and it ages out within the TTL.
        crashing.proc.send_signal(signal.SIGKILL)
        crashing.proc.wait(timeout=10)
        await eventually(lambda: _only(reader, stopping), timeout=TTL + 20, interval=0.2)

        # SIGTERM: a clean stop writes its own tombstone on the way out.
        stopping.proc.send_signal(signal.SIGTERM)
        output, _ = stopping.proc.communicate(timeout=60)
        assert stopping.proc.returncode in (0, -signal.SIGTERM), output
        assert (stopped_id.encode(), None) in await _records(kafka_config, topic)
        assert await reader.discover("sample") == []

        # The crashed one is tombstoned by a reader once silent past the grace period.
        async def buried() -> bool:
            return (crashed_id.encode(), None) in await _records(kafka_config, topic)

        await eventually(buried, timeout=GRACE + 30, interval=0.5)
    finally:
        await reader.stop()
        await databases.drop_all()


async def _both(registry: object, *served: Served) -> bool:
    return await _urls(registry) == {s.base_url for s in served}


async def _only(registry: object, served: Served) -> bool:
    return await _urls(registry) == {served.base_url}


async def _records(config: KafkaConfig, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    return [(r.key, r.value) for r in await read_topic(config, topic)]


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
async def test_heartbeats_survive_the_broker_away_and_the_instance_comes_back(
    kafka: Any, kafka_config: KafkaConfig, caplog: pytest.LogCaptureFixture, signed: bool
) -> None:
    topic = unique("platform.registry")

    def registry(name: str) -> Any:
        trust = RecordTrust([b"k" * 32], ttl=TTL) if signed else None
        return kafka_registry(dataclasses.replace(kafka_config, client_id=unique(name)),
                              ttl=TTL, heartbeat_interval=BEAT, grace=60, topic=topic,
                              trust=trust)

    writer, reader = registry("writer"), registry("reader")
    await writer.start()
    await reader.start()
    try:
        from core.service_registry import Instance
        me = Instance(service="sample", instance_id=unique("sample"), url="http://127.0.0.1:1")
        await writer.register(me)
        await eventually(lambda: reader.discover("sample"), timeout=15)
        caplog.set_level(logging.INFO, "core.service_registry")
        await asyncio.to_thread(kafka.stop)
        await eventually(lambda: "heartbeat failed" in caplog.text, timeout=30, interval=0.2)
        await asyncio.sleep(TTL * 1.5)  # longer than the TTL
        # Nobody can hear anybody: the instances known are kept, not aged out.
        assert await reader.discover("sample") == [me]
        await asyncio.to_thread(kafka.restart)
        assert await eventually(lambda: reader.discover("sample"), timeout=60) == [me]
        await eventually(lambda: "heartbeats resumed" in caplog.text, timeout=30)
        assert await writer.discover("sample") == [me]
        assert caplog.text.count("heartbeat failed") == 1  # once per outage, not per beat
        assert "REFUSED" not in caplog.text  # heartbeats held through the outage are valid
    finally:
        await writer.stop()
        await reader.stop()


async def test_a_static_empty_list_turns_registration_off(
    kafka_config: KafkaConfig, tmp_path: Path
) -> None:
    """Tests and tools: REGISTRY_BACKEND=static with no list registers nothing anywhere, and
    the service still starts, serves and is ready."""
    from core.config import Settings
    from core.service_registry.static import StaticRegistry
    from tests.sample_service.app import service

    topic = unique("platform.registry")
    settings = Settings(environment="development", service_name="sample",
                        database_url=f"sqlite+aiosqlite:///{tmp_path / 'sample.db'}",
                        kafka_bootstrap_servers=kafka_config.bootstrap_servers,
                        kafka_consumer_group=unique("sample"), registry_backend="static",
                        registry_topic=topic)
    app = service(settings)
    async with app.router.lifespan_context(app):
        registry = app.state.runtime.registry
        assert isinstance(registry, StaticRegistry)
        assert await registry.discover("sample") == []
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            ready = await http.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert "registry" in {c["name"] for c in ready.json()["checks"]}
    assert await read_topic(kafka_config, topic) == []
