"""The gateway's lifespan: every background part it starts (upstream checks, route-table
watch, token-key refresh) is stopped at shutdown, the registry last."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from gateway.app import create_app
from gateway.config import GatewaySettings
from tests.fixed_registry import FixedRegistry

TASKS = {"gateway-health-checks", "route-table-watcher", "jwks-refresh"}
SETTINGS = GatewaySettings(_env_file=None, jwks_url="http://127.0.0.1:9/.well-known/jwks.json",
                           gateway_health_interval=60.0)


def running() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks() if not t.done()} & TASKS


class RecordingRegistry(FixedRegistry):
    """Notes which background tasks still run when it is stopped."""

    def __init__(self) -> None:
        super().__init__({})
        self.at_stop: set[str] | None = None

    async def stop(self) -> None:
        self.at_stop = running()


async def test_shutdown_stops_every_background_part_and_the_registry_last() -> None:
    registry = RecordingRegistry()
    app = create_app(SETTINGS, registry=registry)
    started = asyncio.Event()
    stopping = asyncio.Event()
    seen: dict[str, set[str]] = {}

    async def receive() -> dict[str, Any]:
        if not started.is_set():
            started.set()
            return {"type": "lifespan.startup"}
        await stopping.wait()
        return {"type": "lifespan.shutdown"}

    answers: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        answers.append(message)
        if message["type"] == "lifespan.startup.complete":
            seen["up"] = running()
            stopping.set()

    await asyncio.wait_for(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                               receive, send), 30)
    assert [a["type"] for a in answers] == ["lifespan.startup.complete",
                                            "lifespan.shutdown.complete"]
    assert seen["up"] == TASKS
    assert registry.at_stop == set(), "the registry stops after everything that uses it"
    assert running() == set()

