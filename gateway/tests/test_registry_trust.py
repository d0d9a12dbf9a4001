"""A poisoned registry, through the real gateway on a real broker: records written straight to
the registry topic with confluent-kafka (an instance nobody signed, one signed with another
key, and the real instance's own signed record with its address changed) are refused; the
instance that signs with the platform's key gets every request."""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Producer

from core.config import KafkaConfig, Settings
from core.messaging import read_topic
from core.service_registry import Instance, RecordTrust, encode, kafka_registry, record_trust
from devinfra.process import free_port
from gateway.tests.harness import Gateway, Upstream
from tests.helpers import eventually, unique

TTL, BEAT, GRACE = 6.0, 1.0, 60.0
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
retries = 0
"""


def _produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in records:
        producer.produce(topic, value, key)
    assert producer.flush(10) == 0


async def test_the_gateway_refuses_instances_nobody_signed_and_serves_signed_ones(
        kafka: Any, spawn: Callable[..., Any], tmp_path: Path) -> None:
    topic = unique("platform.registry")
    key_file = tmp_path / "registry.key"
    key_file.write_text(secrets.token_urlsafe(32) + "\n")
    os.chmod(key_file, 0o600)
    real = await Upstream("real", free_port(), spawn).start()
    rogue = await Upstream("rogue", free_port(), spawn).start()
    config = KafkaConfig(kafka.bootstrap_servers, unique("real"), unique("group"))
    settings = Settings(registry_signing_key_file=str(key_file), registry_ttl=TTL,
                        registry_heartbeat_interval=BEAT, registry_grace=GRACE)
    writer = kafka_registry(config, ttl=TTL, heartbeat_interval=BEAT, grace=GRACE, topic=topic,
                            trust=record_trust(settings))
    await writer.start()
    await writer.register(Instance("svc", "svc-real", real.url))
    gateway = await Gateway(spawn, tmp_path / "gw", ROUTES, {
        "REGISTRY_BACKEND": "kafka", "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "REGISTRY_TOPIC": topic, "REGISTRY_SIGNING_KEY_FILE": str(key_file),
        "REGISTRY_TTL": str(TTL), "REGISTRY_HEARTBEAT_INTERVAL": str(BEAT),
        "REGISTRY_GRACE": str(GRACE)}).start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            async def served() -> bool:
                return (await http.get("/api/svc/x")).status_code == 200
            await eventually(served, timeout=30, interval=0.2)

            signed = [r for r in await read_topic(config, topic)
                      if r.key == b"svc-real" and r.value is not None][-1].value
            assert signed is not None
            hijacked = {**json.loads(signed), "url": rogue.url}
            other_key = RecordTrust([secrets.token_bytes(32)], ttl=TTL)
            _produce(kafka.bootstrap_servers, topic, [
                ("svc-rogue", encode(Instance("svc", "svc-rogue", rogue.url))),
                ("svc-rogue2", encode(Instance("svc", "svc-rogue2", rogue.url),
                                      other_key.seal)),
                ("svc-real", json.dumps(hijacked).encode()),
            ])

            def refusals() -> Counter[str]:
                return Counter(line.split("REFUSED a record (")[1].split(")")[0]
                               for line in gateway.log.read_text().splitlines()
                               if "REFUSED a record (" in line)
            async def read_them() -> bool:  # or, unprotected, routed to one of them
                return (refusals() == {"unsigned": 1, "signature": 2}
                        or (await http.get("/api/svc/x")).json()["instance"] == "rogue")
            await eventually(read_them, timeout=30, interval=0.1)
            answers = [await http.get("/api/svc/x") for _ in range(30)]
        assert Counter(a.status_code for a in answers) == {200: 30}
        assert {a.json()["instance"] for a in answers} == {"real"}
        assert await rogue.seen() == []
        log = gateway.log.read_text()
        assert "svc instance svc-rogue at " + rogue.url + ": the record is not signed" in log
    finally:
        gateway.stop()
        await writer.stop()
