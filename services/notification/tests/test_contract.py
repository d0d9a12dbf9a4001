"""The notification service keeps its OpenAPI contract: schemathesis, authenticated as a
user who has notifications, against the service in its own process, this time on SQLite."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import KafkaConfig
from core.messaging.event_bus import KafkaEventBus
from devinfra.process import free_port
from services.notification.events import AUTH_EVENTS, DRIVER_EVENTS, USER_EVENTS
from services.notification.tests.kafka_support import start_at_the_end
from services.notification.tests.support import new_user, password_changed, profile_created
from tests.contract import run_schemathesis
from tests.integration.served import serve
from tests.integration.test_security_issuer import IssuerProc
from tests.security_support import AUDIENCE, ISSUER
from tests.support import unique


@pytest.mark.timeout(300)
async def test_the_service_keeps_its_openapi_contract(
        kafka: Any, spawn: Callable[..., Any], tmp_path: Path) -> None:
    config = KafkaConfig(kafka.bootstrap_servers, unique("contract"), unique("group"))
    group = unique("notification")
    await start_at_the_end(config, group, [AUTH_EVENTS, USER_EVENTS, DRIVER_EVENTS])
    issuer = IssuerProc(f"http://127.0.0.1:{free_port()}", tmp_path / "keys", spawn)
    await issuer.start()
    log = tmp_path / "service.log"
    served = await serve(spawn, "services.notification", kafka=config, output=log,
                         database_url=f"sqlite+aiosqlite:///{tmp_path / 'notification.db'}",
                         env={"KAFKA_CONSUMER_GROUP": group, "JWKS_URL": issuer.jwks_url,
                              "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE,
                              "REGISTRY_BACKEND": "static", "REGISTRY_STATIC": ""})
    user = new_user()
    headers = {"Authorization": "Bearer " + await issuer.issue(
        user, permissions=["notifications:read"], roles=["user"])}
    bus = KafkaEventBus(config)
    await bus.producer.start()
    try:  # something to list and mark: the run then covers more than empty pages
        await bus.publish(USER_EVENTS, profile_created(user, "contract@example.com"))
        await bus.publish(AUTH_EVENTS, password_changed(user))
    finally:
        await bus.stop()

    async with httpx.AsyncClient(base_url=served.base_url, headers=headers) as http:
        for _ in range(150):
            if (await http.get("/notifications")).json()["data"]:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"the seeded notification never showed:\n{log.read_text()}")

    run = await asyncio.to_thread(run_schemathesis, served.base_url, tmp_path, headers=headers)

    assert served.proc.poll() is None, f"the service died during the run:\n{log.read_text()}"
    assert run.cases > 0, f"schemathesis ran no case:\n{run.output}"
    assert run.passed, (
        f"notification breaks its OpenAPI contract ({run.cases} cases)\n"
        f"$ (cd {tmp_path} && {shlex.join(run.command)})\n{run.output}\n{log.read_text()[-5000:]}")
