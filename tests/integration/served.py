"""A service run the way it is deployed, for tests that talk to it over the wire: its own
process (`python -m MODULE PORT`, uvicorn inside), configured by the environment, on a
database and the test broker of the caller's choosing."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.config import KafkaConfig
from devinfra.process import free_port
from tests.support import eventually, unique

Spawn = Callable[..., subprocess.Popen[str]]


@dataclass(frozen=True, slots=True)
class Served:
    """A running service: where it answers and its process."""

    base_url: str
    proc: subprocess.Popen[str]


async def serve(
    spawn: Spawn,
    module: str,
    *,
    database_url: str,
    kafka: KafkaConfig,
    ready_path: str = "/openapi.json",
    env: Mapping[str, str] | None = None,
    output: Path | None = None,
    timeout: float = 60,
) -> Served:
    """Start `module` on a free port in development mode (it migrates its fresh database) and
    wait until `ready_path` answers 200: uvicorn answers only once the app's lifespan (database,
    topics, consumer, relay) has started. `output` receives the process's log, see `spawn`."""
    port = free_port()
    proc = spawn(module, str(port), output=output, env={
        "SERVICE_PORT": str(port),
        "ENVIRONMENT": "development",
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_CONSUMER_GROUP": unique(module.rsplit(".", 1)[-1]),
        **(env or {}),
    })
    served = Served(f"http://127.0.0.1:{port}", proc)
    await eventually(lambda: _answers(served, ready_path), timeout=timeout, interval=0.2)
    return served


async def _answers(served: Served, path: str) -> bool:
    assert served.proc.poll() is None, f"the service exited with {served.proc.returncode}"
    try:
        async with httpx.AsyncClient(base_url=served.base_url) as http:
            return (await http.get(path)).status_code == 200
    except httpx.TransportError:
        return False
