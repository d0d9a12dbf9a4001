"""Fixtures for tests against the real broker: configs, topics and buses that clean up."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from core.config import KafkaConfig
from core.messaging.event_bus import KafkaEventBus
from core.messaging.kafka_client import KafkaAdmin
from core.messaging.serialization import EventRegistry
from tests.integration.databases import BACKENDS, DatabaseFactory, open_databases
from tests.support import unique

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts `python -m MODULE ARGS` (with `env` added to the environment) from the repository
    root; kills leftovers afterwards. Its stdout is a pipe for the test to read, or, for a
    chatty process that nobody reads while it runs, the file `output` (a pipe nobody drains
    fills up and stalls the process)."""
    procs: list[subprocess.Popen[str]] = []
    files: list[IO[str]] = []

    def start(module: str, *args: str, env: dict[str, str] | None = None,
              output: Path | None = None) -> subprocess.Popen[str]:
        env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
        stdout: IO[str] | int = subprocess.PIPE
        if output is not None:
            stdout = output.open("w")
            files.append(stdout)
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                                stdout=stdout, stderr=None if output is None else stdout,
                                text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    for file in files:
        file.close()


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
