"""The last-admin guard on each database, SQLite and the real PostgreSQL: two admins taking
each other's admin role at the same moment leave one admin, never none."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import delete, func, select

from core.bases import ConflictError
from core.db import Database, migrations
from services.auth.main import SERVICE_DIR
from services.auth.models import UserRole
from services.auth.passwords import Passwords
from services.auth.rules.accounts import Accounts
from services.auth.rules.rbac import ADMIN_ROLE, Rbac
from services.auth.tests.conftest import PASSWORD
from tests.helpers import unique
from tests.integration.databases import BACKENDS, open_databases

ROUNDS = 20


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=BACKENDS)
async def database(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    async with open_databases(request, tmp_path_factory.mktemp("rbac")) as factory:
        database = Database(await factory.new())
        await migrations.upgrade(SERVICE_DIR, database)
        yield database
        await database.dispose()


async def take_admin(database: Database, user: uuid.UUID) -> bool:
    """Revoke `user`'s admin role in a transaction of its own; False when refused."""
    try:
        async with database.transaction() as session:
            await Rbac(session, None).revoke(user, ADMIN_ROLE)
    except ConflictError:
        return False
    return True


async def test_two_admins_demoting_each_other_at_once_leave_one(database: Database) -> None:
    passwords = Passwords(time_cost=1, memory_kib=1024, parallelism=1, concurrency=2)
    outcomes = []
    for _ in range(ROUNDS):
        async with database.transaction() as session:  # the only admins: none before
            await session.execute(delete(UserRole).where(UserRole.role == ADMIN_ROLE))
            accounts = Accounts(session, None, passwords)
            admins = [(await accounts.register(f"{unique('a')}@example.com", PASSWORD,
                                               roles=(ADMIN_ROLE,)))[0].id for _ in range(2)]
        done = await asyncio.gather(*(take_admin(database, a) for a in admins))
        async with database.session() as session:
            left = await session.scalar(select(func.count()).select_from(UserRole)
                                        .where(UserRole.role == ADMIN_ROLE))
        outcomes.append((sorted(done), left))
    none = sum(1 for _, left in outcomes if left == 0)
    assert outcomes == [([False, True], 1)] * ROUNDS, f"no admin left in {none} of {ROUNDS}"
