"""The user service keeps the contract its OpenAPI states (schemathesis over real HTTP), called
with a token holding every permission whose subject has a profile, so the routes are
exercised past their 401, 403 and 404."""

from __future__ import annotations

import asyncio
import shlex
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.user.tests.conftest import EVERY_PERMISSION, Wire, registered, start_service
from tests.contract import run_schemathesis
from tests.integration.test_security_issuer import IssuerProc


@pytest.mark.timeout(300)
async def test_the_user_service_keeps_its_openapi_contract(
        module_spawn: Callable[..., Any], issuer: IssuerProc, wire: Wire,
        tmp_path: Path) -> None:
    service = await start_service(module_spawn, issuer, wire, tmp_path,
                                  f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}")
    user_id = str(uuid.uuid4())
    await registered(service, wire, user_id, "contract@example.com")
    token = await issuer.issue(user_id, permissions=EVERY_PERMISSION, ttl=600)
    run = await asyncio.to_thread(run_schemathesis, service.url, tmp_path,
                                  headers={"Authorization": f"Bearer {token}"})
    assert service.served.proc.poll() is None, service.log.read_text()
    print(f"user: {run.cases} cases in {run.seconds:.1f}s")
    assert run.cases > 0, f"schemathesis ran no case:\n{run.output}"
    assert run.passed, (
        f"the user service breaks its OpenAPI contract ({run.cases} cases)\n"
        f"$ (cd {tmp_path} && {shlex.join(run.command)})\n{run.output}\n"
        f"--- service log (tail) ---\n{service.log.read_text()[-6000:]}")
