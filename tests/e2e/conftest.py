"""The whole system for the end-to-end tests: every service as its own process, started once
for the tests of this package by the same `Stack` as `make up`, on free ports, against the
session's Kafka broker and PostgreSQL (one fresh database per service, dropped at the end),
with a real Prometheus scraping every process (as `make up OBS=1`).

Stopped after this package, not at the end of the session: its services read the topics the
contract names (`auth.events`, `user.requests`, ...), the same ones each service's own tests
publish to on the same broker, and a second user service answering there would make those
tests see two profiles for one registration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devinfra.kafka import KafkaBroker
from devinfra.postgres import PostgresServer
from devinfra.stack import Stack
from tests.e2e.system import System, started
from tests.helpers import unique


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def system(kafka: KafkaBroker, postgres: PostgresServer,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    state: Path = tmp_path_factory.mktemp("stack")
    prefix = unique("e2e").replace("-", "_") + "_"
    stack = Stack(state_dir=state, base_port=0, kafka=kafka, db="postgres", postgres=postgres,
                  prefix=prefix, ready_timeout=90, stop_timeout=15, observability=True,
                  # Its own registry, so no instance another test left behind is discovered.
                  env={"REGISTRY_TOPIC": f"{prefix}platform.registry",
                       # Spans reach the stack's traces file within 0.2 s (test_tracing).
                       "OTEL_BSP_SCHEDULE_DELAY": "200"})
    async with started(stack, postgres) as system:
        yield system
