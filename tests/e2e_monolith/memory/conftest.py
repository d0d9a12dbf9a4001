"""The whole system as one process on the in-memory bus (`make up MODE=monolith BUS=memory`),
with no Kafka started: the monolith runs on this test process's own event loop, so the tests
can read the topics of its broker, which lives only in the process that holds it.

The same plan the stack writes for `python -m devinfra.stack.inprocess` (each service's
module, port and environment, in start waves), run by the same `Monolith`; SQLite databases
in a temporary folder, free ports, no admin (the flows here log in none)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from core.messaging.memory_broker import broker_for, drop
from devinfra.stack import Stack
from devinfra.stack.inprocess import Member, Monolith
from devinfra.stack.launcher import create_secret_file
from devinfra.stack.monolith import MEMORY_BUS
from devinfra.stack.specs import start_order
from tests.e2e.system import System


def plan(stack: Stack) -> list[list[Member]]:
    """What the stack's plan file holds for `stack`, as the runner reads it."""
    return [[Member(spec.name, spec.module, stack.ports[spec.name],
                    {"OTEL_SERVICE_NAME": "monolith", **stack.service_env(spec)},
                    spec.ready_path) for spec in wave]
            for wave in start_order(stack.services)]


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    state: Path = tmp_path_factory.mktemp("monolith-memory")
    stack = Stack(state_dir=state, base_port=0, mode="monolith", bus="memory",
                  admin_email=None, ready_timeout=90)
    assert stack.bootstrap_servers == MEMORY_BUS
    create_secret_file(stack.registry_key_file)
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
    assert code == 0


async def _all_ready(stack: Stack) -> None:
    """Until the gateway (the last wave) answers ready: every service started before it."""
    import httpx

    gateway = stack.url("gateway") + "/health/ready"
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                if (await client.get(gateway)).status_code == 200:
                    broker_for(MEMORY_BUS)  # made by the services by now
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
