"""The whole system as one process on the in-memory bus (`make up MODE=monolith BUS=memory`),
with no Kafka started: the monolith runs on this test process's own event loop, so the tests
can read the topics of its broker, which lives only in the process that holds it.

The same plan the stack writes for `python -m devinfra.stack.inprocess` (each service's
module, port and environment, in start waves), run by the same `Monolith`; the session's
PostgreSQL (one fresh database per service, dropped at the end), free ports, no admin (the
flows here log in none)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio

from core.messaging.memory_broker import drop
from core.tracing import provider as tracing_provider
from devinfra.postgres import PostgresServer
from devinfra.stack import Stack
from devinfra.stack.inprocess import Member, Monolith
from devinfra.stack.launcher import create_secret_file
from devinfra.stack.monolith import MEMORY_BUS
from devinfra.stack.specs import start_order
from tests.e2e.system import System
from tests.helpers import unique


def plan(stack: Stack) -> list[list[Member]]:
    """What the stack's plan file holds for `stack`, as the runner reads it, but with tracing
    off: a tracer provider is one per process, and this process runs the other tests too."""
    return [[Member(spec.name, spec.module, stack.ports[spec.name],
                    {"OTEL_SERVICE_NAME": "monolith", **stack.service_env(spec),
                     "OTEL_TRACES_FILE": ""},
                    spec.ready_path) for spec in wave]
            for wave in start_order(stack.services)]


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def system(postgres: PostgresServer,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    state: Path = tmp_path_factory.mktemp("monolith-memory")
    stack = Stack(state_dir=state, base_port=0, mode="monolith", bus="memory", db="postgres",
                  postgres=postgres, prefix=unique("memory").replace("-", "_") + "_",
                  admin_email=None, ready_timeout=90)
    assert stack.bootstrap_servers == MEMORY_BUS
    create_secret_file(stack.registry_key_file)
    names = [stack.database_name(spec.name) for spec in stack.services if spec.database]
    await _databases(postgres, [f'CREATE DATABASE "{name}"' for name in names])
    tracer = tracing_provider._provider
    monolith = Monolith(plan(stack), ready_timeout=90)
    running = asyncio.create_task(monolith.run(signals=False), name="monolith-memory")
    try:
        ready = asyncio.create_task(_all_ready(stack))
        done, _ = await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
        if running in done:  # it gave up: a service could not start (the log says why)
            ready.cancel()
            pytest.fail(f"the monolith ended while starting (exit {running.result()})")
        yield System(stack)
    finally:
        monolith.request_stop()
        code = await asyncio.wait_for(running, 60)
        drop(MEMORY_BUS)
        await _databases(postgres, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                                    for name in names])
    assert code == 0
    assert tracing_provider._provider is tracer, "the monolith changed this process's tracing"


async def _databases(postgres: PostgresServer, statements: list[str]) -> None:
    conn = await asyncpg.connect(postgres.dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _all_ready(stack: Stack) -> None:
    """Until the gateway (the last wave) answers ready: every service started before it."""
    gateway = stack.url("gateway") + "/health/ready"
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                if (await client.get(gateway)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
