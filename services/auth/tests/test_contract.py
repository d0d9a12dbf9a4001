"""The auth service keeps its OpenAPI contract: schemathesis against its own process,
authenticated as an admin (made by `create-admin`), so the routes behind rbac:manage are
exercised past their 403."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path
from typing import Any

import pytest

from services.auth.tests.conftest import PASSWORD, bearer, login, running_auth
from tests.contract import run_schemathesis


@pytest.mark.timeout(300)
async def test_the_auth_service_keeps_its_openapi_contract(kafka: Any, tmp_path: Path) -> None:
    async with running_auth(tmp_path, kafka) as auth:
        made = auth.cli("create-admin", "--email", "contract@example.com", "--password-stdin",
                        stdin=PASSWORD)
        assert made.returncode == 0, made.stderr
        async with auth.client() as http:
            token = (await login(http, "contract@example.com"))["access_token"]
        run = await asyncio.to_thread(run_schemathesis, auth.url, tmp_path,
                                      headers=bearer(token), max_examples=40)
        alive = auth.alive
    print(f"auth: {run.cases} cases in {run.seconds:.1f}s")
    assert alive, f"the service died during the run:\n{auth.log.read_text()[-4000:]}"
    assert run.cases > 0, f"schemathesis ran no case:\n{run.output}"
    assert run.passed, (
        f"auth breaks its OpenAPI contract ({run.cases} cases)\n"
        f"$ (cd {tmp_path} && {shlex.join(run.command)})\n{run.output}\n"
        f"--- service log (tail) ---\n{auth.log.read_text()[-6000:]}")
