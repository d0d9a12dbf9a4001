"""The whole system as one process (`make up MODE=monolith`) for the tests of this package:
started once by the same `Stack` as the multi-process tests (tests/e2e), on free ports, against
the session's Kafka broker and PostgreSQL (one fresh database per service, dropped at the end).

A package of its own, after tests/e2e and not beside it: both systems answer on the topics the
contract names (`user.requests`, ...), and two user services answering one request would make
either package's tests see two replies."""

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
    state: Path = tmp_path_factory.mktemp("monolith")
    prefix = unique("mono").replace("-", "_") + "_"
    stack = Stack(state_dir=state, base_port=0, kafka=kafka, db="postgres", postgres=postgres,
                  prefix=prefix, ready_timeout=90, stop_timeout=15, mode="monolith",
                  # The flows run here log in no admin: auth's CLI process (seconds of
                  # imports) is left out; `make up MODE=monolith` makes one as `make up` does.
                  admin_email=None,
                  # Its own registry, so no instance another test left behind is discovered.
                  env={"REGISTRY_TOPIC": f"{prefix}platform.registry"})
    async with started(stack, postgres) as system:
        yield system
