"""The notification service keeps its OpenAPI contract: schemathesis against its own process
(PostgreSQL, the real Kafka broker, a real token issuer), authenticated as a user who has
notifications."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest

from services.notification.tests.conftest import World, new_user, password_changed, profile_created
from tests.contract import run_schemathesis

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.timeout(300)
async def test_the_service_keeps_its_openapi_contract(world: World, tmp_path: Path) -> None:
    user = new_user()
    await world.publish(profile_created(user, "contract@example.com"))
    await world.publish(password_changed(user))
    await world.one(user, "security")  # something to list and mark, not only empty pages
    headers = {"Authorization": f"Bearer {await world.token(user, ttl=900)}"}

    run = await asyncio.to_thread(run_schemathesis, world.service.url, tmp_path,
                                  headers=headers)

    assert world.service.alive, f"the service died:\n{world.service.tail()}"
    assert run.cases > 0, f"schemathesis ran no case:\n{run.output}"
    assert run.passed, (
        f"notification breaks its OpenAPI contract ({run.cases} cases)\n"
        f"$ (cd {tmp_path} && {shlex.join(run.command)})\n{run.output}\n{world.service.tail(80)}")
