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
from devinfra.process import free_port
from tests.contract import run_schemathesis
from tests.helpers import IssuerProc, answers_ok, eventually
from tests.helpers.service import Spawn, serve
from tests.sample_service.app import ROLE_HEADER
from tests.security_support import AUDIENCE, ISSUER


@dataclass(frozen=True, slots=True)
class ServiceUnderTest:
    """How to run a service (`python -m module PORT`) and whom to be when calling it."""

    name: str
    module: str
    headers: dict[str, str] = field(default_factory=dict)
    tokens: bool = False
    """Runs beside a token issuer (JWKS_URL) and calls with a token holding every permission."""


SERVICES = [
    # As an admin, so the routes behind permissions are exercised past their 403.
    ServiceUnderTest("sample", "tests.integration.procs.sample_app", {ROLE_HEADER: "admin"}),
    # Its token routes, one calling another service (a real upstream) by name.
    ServiceUnderTest("sample-secured", "tests.integration.procs.secured_app",
                     {ROLE_HEADER: "admin"}, tokens=True),
]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
@pytest.mark.timeout(300)
async def test_the_service_keeps_its_openapi_contract(
    service: ServiceUnderTest, kafka_config: KafkaConfig, spawn: Spawn, issuer: IssuerProc,
    tmp_path: Path
) -> None:
    log = tmp_path / f"{service.name}.log"
    env, headers = {}, dict(service.headers)
    if service.tokens:
        echo_port = free_port()
        spawn("tests.integration.procs.upstream", str(echo_port), "echo")
        await eventually(lambda: answers_ok(f"http://127.0.0.1:{echo_port}/echo"), timeout=60,
                         interval=0.2)
        env = {"JWKS_URL": issuer.jwks_url, "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE,
               "REGISTRY_BACKEND": "static",
               "REGISTRY_STATIC": f"echo=http://127.0.0.1:{echo_port}"}
        headers["Authorization"] = f"Bearer {await issuer.issue('contract-user')}"
    served = await serve(spawn, service.module, kafka=kafka_config, output=log, env=env,
                         database_url=f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}")
    run = await asyncio.to_thread(run_schemathesis, served.base_url, tmp_path,
                                  headers=headers)
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
