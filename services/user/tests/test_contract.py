"""The user service keeps its OpenAPI contract: schemathesis against its own process on
PostgreSQL (Redis cache) and real Kafka, with a real token."""

from __future__ import annotations

import asyncio
import shlex
import uuid
from pathlib import Path

import pytest

from services.user.tests.conftest import EVERY_PERMISSION, Service, Wire, registered
from tests.contract import run_schemathesis


@pytest.mark.timeout(300)
@pytest.mark.parametrize("service", ["postgres"], indirect=True)  # once
async def test_the_service_keeps_its_openapi_contract(
        service: Service, wire: Wire, tmp_path: Path) -> None:
    """Schemathesis over real HTTP, with a token holding every permission whose subject has a
    profile, so the routes are exercised past their 401, 403 and 404. Once: on PostgreSQL."""
    user_id = str(uuid.uuid4())
    await registered(service, wire, user_id, "contract@example.com")
    token = await service.token(user_id, *EVERY_PERMISSION, ttl=600)
    run = await asyncio.to_thread(run_schemathesis, service.url, tmp_path,
                                  headers={"Authorization": f"Bearer {token}"})
    assert service.alive, service.log.read_text()[-6000:]
    print(f"user: {run.cases} cases in {run.seconds:.1f}s")
    assert run.cases > 0, f"schemathesis ran no case:\n{run.output}"
    assert run.passed, (
        f"the user service breaks its OpenAPI contract ({run.cases} cases)\n"
        f"$ (cd {tmp_path} && {shlex.join(run.command)})\n{run.output}\n"
        f"--- service log (tail) ---\n{service.log.read_text()[-6000:]}")
