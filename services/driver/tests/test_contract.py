"""The driver service keeps its OpenAPI contract: schemathesis against its own process beside
real Kafka, a token issuer and the stand-in user service, with a token holding every
permission."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.driver.tests.conftest import ADMIN_PERMISSIONS, DriverStack
from tests.contract import run_schemathesis

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.timeout(300)
async def test_the_service_keeps_its_openapi_contract(stack: DriverStack,
                                                      tmp_path: Path) -> None:
    """Schemathesis with a token holding every permission. The stream route stays in, but
    schemathesis reads one event of a stream and hangs up (`max-stream-events`, in the
    run's own schemathesis.toml) rather than holding it open until the stream's end."""
    (tmp_path / "schemathesis.toml").write_text(
        '[[operations]]\ninclude-path-regex = "/locations/stream$"\nmax-stream-events = 1\n')
    stack.permissions["contract"] = ADMIN_PERMISSIONS
    await stack.new_driver(user_id="contract", status="available")  # /drivers/me answers 200
    headers = {"Authorization": f"Bearer {await stack.token('contract', ADMIN_PERMISSIONS)}"}
    run = await asyncio.to_thread(run_schemathesis, stack.service.url, tmp_path, headers=headers,
                                  max_examples=30)
    assert stack.service.alive, "the service died during the run"
    assert run.cases > 0, run.output
    assert run.passed, f"{run.output}\n--- service log ---\n{stack.service.log.read_text()[-5000:]}"
