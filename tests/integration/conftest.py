"""Fixtures for tests against the real broker: configs, topics and buses that clean up."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from core.config import KafkaConfig
from core.messaging.event_bus import KafkaEventBus
from core.messaging.kafka_client import KafkaAdmin
from core.messaging.serialization import EventRegistry
from tests.helpers import unique
from tests.integration.databases import BACKENDS, DatabaseFactory, open_databases


@pytest.fixture
def kafka_config(kafka: Any) -> KafkaConfig:
    return KafkaConfig(kafka.bootstrap_servers, unique("test"), unique("group"))


@pytest.fixture
async def topic(kafka_config: KafkaConfig) -> str:
    """A fresh topic with 3 partitions."""
    name = unique("topic")
    await KafkaAdmin(kafka_config).create_topics([name], partitions=3)
    return name


BusFactory = Callable[..., KafkaEventBus]


@pytest.fixture
async def make_bus(kafka_config: KafkaConfig) -> AsyncIterator[BusFactory]:
    """Builds started-on-demand buses on the test broker; stops them all afterwards."""
    buses: list[KafkaEventBus] = []

    def factory(events: EventRegistry | None = None, *, group: str | None = None,
                config: KafkaConfig | None = None, **options: Any) -> KafkaEventBus:
        base = config or kafka_config
        cfg = dataclasses.replace(base, client_id=unique("client"),
                                  consumer_group=group or unique("group"))
        bus = KafkaEventBus(cfg, events, **options)
        buses.append(bus)
        return bus

    yield factory
    for bus in buses:
        await bus.stop()


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a new database on the test PostgreSQL."""
    server = request.getfixturevalue("postgres") if request.param == "postgres" else None
    databases = DatabaseFactory(request.param, tmp_path, server)
    yield await databases.new()
    await databases.drop_all()


@pytest.fixture(params=BACKENDS)
async def databases(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[
        DatabaseFactory]:
    """A factory of fresh databases on SQLite and on the test PostgreSQL, dropped afterwards."""
    async with open_databases(request, tmp_path) as factory:
        yield factory
