"""Every service keeps the contract its OpenAPI states, checked by schemathesis over real HTTP
against the service in its own process (SQLite, the test broker). A new service joins by adding
a line to SERVICES."""

from __future__ import annotations

import asyncio
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.config import KafkaConfig
from tests.contract import run_schemathesis
from tests.integration.served import Spawn, serve
from tests.sample_service.app import ROLE_HEADER


@dataclass(frozen=True, slots=True)
class ServiceUnderTest:
    """How to run a service (`python -m module PORT`) and whom to be when calling it."""

    name: str
    module: str
    headers: dict[str, str] = field(default_factory=dict)


SERVICES = [
    # As an admin, so the routes behind permissions are exercised past their 403.
    ServiceUnderTest("sample", "tests.integration.procs.sample_app", {ROLE_HEADER: "admin"}),
]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
@pytest.mark.timeout(300)
async def test_the_service_keeps_its_openapi_contract(
    service: ServiceUnderTest, kafka_config: KafkaConfig, spawn: Spawn, tmp_path: Path
) -> None:
    log = tmp_path / f"{service.name}.log"
    served = await serve(spawn, service.module, kafka=kafka_config, output=log,
                         database_url=f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}")
    run = await asyncio.to_thread(run_schemathesis, served.base_url, tmp_path,
                                  headers=service.headers)
    assert served.proc.poll() is None, f"the service died during the run:\n{log.read_text()}"
    print(f"{service.name}: {run.cases} cases in {run.seconds:.1f}s")
    assert run.cases > 0, f"schemathesis ran no case:\n{run.output}"
    assert run.passed, (
        f"{service.name} breaks its OpenAPI contract ({run.cases} cases, {run.seconds:.0f}s)\n"
        f"$ (cd {tmp_path} && {shlex.join(run.command)})\n{run.output}\n"
        f"--- service log, without access lines (tail) ---\n{_errors(log)}")


def _errors(log: Path, lines: int = 80) -> str:
    """The service log without uvicorn's line per request: what is left is what went wrong
    (the traceback behind a 500)."""
    kept = [line for line in log.read_text().splitlines() if not _ACCESS.match(line)]
    return "\n".join(kept[-lines:])


_ACCESS = re.compile(r'^INFO:\s+[\d.]+:\d+ - "')
