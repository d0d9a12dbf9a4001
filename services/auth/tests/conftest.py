"""One auth process for the HTTP tests of this package (started once, on SQLite, beside the
test broker), and an admin made by the `create-admin` command."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from services.auth.tests.support import PASSWORD, AuthProc, lines, login, running_auth

THROTTLE = {
    "ACCOUNT_SLOW_AFTER": "3", "ACCOUNT_LOCK_AFTER": "5", "LOGIN_SLOW_SECONDS": "0.5",
    "LOGIN_LOCK_SECONDS": "3",
    # Every test calls from 127.0.0.1: the per-client limit is tested on the store itself.
    "CLIENT_SLOW_AFTER": "10000", "CLIENT_LOCK_AFTER": "10000",
}


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def auth(kafka: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AuthProc]:
    async with running_auth(tmp_path_factory.mktemp("auth"), kafka, env=THROTTLE) as proc:
        yield proc


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def admin(auth: AuthProc) -> dict[str, Any]:
    """The first admin, from the command (its password on standard input), logged in."""
    done = auth.cli("create-admin", "--email", "root@example.com", "--password-stdin",
                    stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    async with auth.client() as http:
        tokens = await login(http, "root@example.com")
    return {"id": lines(done.stdout)["id"], **tokens}
