"""Contract suites: one abstract suite per port, run against every implementation.

`harness` runs each event-bus case on the in-memory bus and on real Kafka; `store` runs each
idempotency case in memory, on SQLite and on the real PostgreSQL; `registries` runs each
service-registry case on the in-memory log and on a real Kafka topic. The Kafka and PostgreSQL
cases carry the `kafka` / `postgres` markers, so `-m "not kafka"` keeps the fast half.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contracts.bus_harness import BusHarness, KafkaHarness, MemoryHarness
from tests.contracts.registry_harness import KafkaHarness as KafkaRegistryHarness
from tests.contracts.registry_harness import MemoryHarness as MemoryRegistryHarness
from tests.contracts.registry_harness import RegistryHarness
from tests.contracts.store_harness import StoreHarness, open_store


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[BusHarness]:
    made: BusHarness
    if request.param == "kafka":
        kafka = KafkaHarness(request.getfixturevalue("kafka").bootstrap_servers)
        await kafka.create_topic()
        made = kafka
    else:
        made = MemoryHarness()
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    server = request.getfixturevalue("postgres") if request.param == "postgres" else None
    async with open_store(request.param, tmp_path, server) as made:
        yield made


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
async def registries(request: pytest.FixtureRequest) -> AsyncIterator[RegistryHarness]:
    made: RegistryHarness
    if request.param == "kafka":
        kafka = KafkaRegistryHarness(request.getfixturevalue("kafka").bootstrap_servers)
        await kafka.create_topic()
        made = kafka
    else:
        made = MemoryRegistryHarness()
    try:
        yield made
    finally:
        await made.close()
