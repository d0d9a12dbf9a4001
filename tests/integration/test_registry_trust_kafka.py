"""Signed registry records between real processes on a real broker: a service started with
`REGISTRY_SIGNING_KEY_FILE` signs its records and a reader with the key serves it; once it
stopped (its tombstone written), its last record written again with confluent-kafka does not
bring it back, neither for a reader that saw it leave nor for one started afterwards."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from core.config import KafkaConfig
from core.messaging.kafka_client import read_topic
from core.service_registry.kafka import kafka_registry
from core.service_registry.trust import RecordTrust, read_keys
from tests.helpers import eventually, unique
from tests.helpers.service import Spawn, serve
from tests.integration.databases import DatabaseFactory

TTL, BEAT, GRACE = 6.0, 1.0, 60.0


async def test_a_signed_instance_is_served_and_its_replayed_record_does_not_resurrect_it(
        kafka_config: KafkaConfig, spawn: Spawn, tmp_path: Path) -> None:
    topic = unique("platform.registry")
    key_file = tmp_path / "registry.key"
    key_file.write_text(secrets.token_urlsafe(32) + "\n")
    os.chmod(key_file, 0o600)
    databases = DatabaseFactory("sqlite", tmp_path, None)
    served = await serve(spawn, "tests.integration.procs.sample_app",
                         database_url=await databases.new(), kafka=kafka_config,
                         output=tmp_path / "sample.log", env={
                             "REGISTRY_TOPIC": topic, "REGISTRY_TTL": str(TTL),
                             "REGISTRY_HEARTBEAT_INTERVAL": str(BEAT),
                             "REGISTRY_GRACE": str(GRACE),
                             "REGISTRY_SIGNING_KEY_FILE": str(key_file),
                             "REGISTRY_ALLOWED_NETWORKS": "127.0.0.0/8"})

    def reader() -> Any:
        return kafka_registry(dataclasses.replace(kafka_config, client_id=unique("reader")),
                              ttl=TTL, heartbeat_interval=BEAT, grace=GRACE, topic=topic,
                              trust=RecordTrust(read_keys(None, str(key_file)), ttl=TTL))

    async def urls(registry: Any) -> list[str]:
        return [i.url for i in await registry.discover("sample")]

    first = reader()
    await first.start()
    late = reader()
    try:
        assert await eventually(lambda: urls(first), timeout=30) == [served.base_url]
        records = [r for r in await read_topic(kafka_config, topic) if r.value is not None]
        last = records[-1]
        assert "sig" in json.loads(last.value or b"") and first.refused == {}

        served.proc.send_signal(signal.SIGTERM)
        served.proc.communicate(timeout=60)
        await eventually(lambda: _tombstoned(kafka_config, topic, last.key), timeout=30)
        await eventually(lambda: first.table.get((last.key or b"").decode()) is None,
                         timeout=30)

        producer = Producer({"bootstrap.servers": kafka_config.bootstrap_servers})
        producer.produce(topic, last.value, last.key)
        assert producer.flush(10) == 0
        assert await eventually(lambda: first.refused, timeout=30) == {"replayed": 1}
        assert await urls(first) == []

        await late.start()  # reads the record, the tombstone and the replay, in that order
        assert late.refused == {"replayed": 1} and await urls(late) == []
    finally:
        await first.stop()
        await late.stop()
        await databases.drop_all()


async def _tombstoned(config: KafkaConfig, topic: str, key: bytes | None) -> bool:
    return any(r.key == key and r.value is None for r in await read_topic(config, topic))
