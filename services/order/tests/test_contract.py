"""The order service keeps its OpenAPI contract: schemathesis against its own process beside
the real driver service and Kafka, with a token holding every permission (the sagas' admin
routes included)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.order.tests.conftest import ADMIN_PERMISSIONS, OrderStack, somewhere
from tests.contract import run_schemathesis

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.timeout(300)
async def test_the_service_keeps_its_openapi_contract(stack: OrderStack, tmp_path: Path) -> None:
    lat, lon = somewhere()
    await stack.place("contract", lat, lon)  # an order and a saga exist to read
    headers = {"Authorization": f"Bearer {await stack.token('contract', ADMIN_PERMISSIONS)}"}
    run = await asyncio.to_thread(run_schemathesis, stack.order.url, tmp_path, headers=headers,
                                  max_examples=30)
    assert stack.order.alive, "the service died during the run"
    assert run.cases > 0, run.output
    assert run.passed, f"{run.output}\n--- service log ---\n{stack.order.log.read_text()[-5000:]}"
