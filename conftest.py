"""Real servers for the tests (under tests/ and services/*/tests), started lazily: only when a
collected test asks for one.

- `kafka`: one KRaft broker for the whole session.
- `kafka_cluster`: three brokers (RF 3, min.insync.replicas 2), one per test module.
- `postgres`, `redis`: one server each for the whole session.
- `issuer`: one token issuer process (`tests.helpers.IssuerProc`) for the whole session.

Tests may kill or stop these servers (failover tests do): before each test, any server that a
previous test left down is restarted, so one test's crash drill never leaks into the next.
Tests using a fixture get the matching marker (kafka, cluster, postgres, redis) automatically,
so `-m "not cluster"` deselects them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devinfra.kafka import KafkaBroker, KafkaCluster
from devinfra.postgres import PostgresServer
from devinfra.process import free_port
from devinfra.redis import RedisServer
from tests.helpers.issuer import IssuerProc
from tests.processes import Spawner

_MARKERS: dict[str, tuple[str, ...]] = {
    "kafka": ("kafka",),
    "kafka_cluster": ("kafka", "cluster"),
    "postgres": ("postgres",),
    "redis": ("redis",),
}

ROOT = Path(__file__).resolve().parent
Restartable = KafkaBroker | PostgresServer | RedisServer
_started: list[Restartable] = []  # servers to bring back up before each test
_clusters: list[KafkaCluster] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        for fixture, markers in _MARKERS.items():
            if fixture in fixtures:
                for marker in markers:
                    if item.get_closest_marker(marker) is None:
                        item.add_marker(marker)


@pytest.fixture(autouse=True)
def _restart_servers_left_down() -> None:
    """Restart any fixture server that an earlier test killed or stopped and did not revive."""
    for server in _started:
        if not server.running:
            server.restart()
    for cluster in _clusters:
        cluster.ensure_running()


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    with KafkaBroker.start() as broker:
        _started.append(broker)
        yield broker
        _started.remove(broker)


@pytest.fixture(scope="module")
def kafka_cluster() -> Iterator[KafkaCluster]:
    with KafkaCluster.start(size=3) as cluster:
        _clusters.append(cluster)
        yield cluster
        _clusters.remove(cluster)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer.start() as server:
        _started.append(server)
        yield server
        _started.remove(server)


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    with RedisServer.start() as server:
        _started.append(server)
        yield server
        _started.remove(server)


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    """Processes for one test, killed after it (see `Spawner`)."""
    spawner = Spawner()
    yield spawner
    spawner.close()


@pytest.fixture(scope="module")
def module_spawn() -> Iterator[Spawner]:
    """Processes shared by a module's tests (a service started once per module), stopped at
    its end: SIGTERM first, so they drain as a deployment stops them."""
    spawner = Spawner()
    yield spawner
    spawner.close(grace=15)


@pytest.fixture(scope="session")
async def issuer(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[IssuerProc]:
    """The session's token issuer, shared by every service under test: issue tokens from it,
    never kill it or rotate its keys (a test that must starts its own `IssuerProc`)."""
    spawner = Spawner()
    workdir = tmp_path_factory.mktemp("issuer")
    proc = IssuerProc(f"http://127.0.0.1:{free_port()}", workdir / "keys", spawner,
                      log=workdir / "issuer.log")
    await proc.start()
    yield proc
    spawner.close()
