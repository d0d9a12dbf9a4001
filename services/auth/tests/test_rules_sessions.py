"""Refresh-token rotation on each database, SQLite and the real PostgreSQL: exactly one of
many concurrent refreshes of one token wins, a reuse revokes the family (committed although
the answer is a refusal), a password change's revoke_all, expiry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select, update

from core.db import Database, migrations
from core.security import KeyManager, MemoryKeyStore, Principal, TokenIssuer
from services.auth.config import AuthSettings
from services.auth.main import SERVICE_DIR
from services.auth.models import RefreshToken
from services.auth.passwords import Passwords
from services.auth.rules import login as flows
from services.auth.rules.accounts import Accounts
from services.auth.rules.login import InvalidCredentialsError
from services.auth.rules.sessions import InvalidRefreshTokenError, Sessions
from services.auth.tests.conftest import PASSWORD
from services.auth.throttle import LoginThrottle
from services.auth.throttle.database import DatabaseFailureStore
from services.auth.throttle.policy import ThrottlePolicy
from tests.helpers import unique
from tests.integration.databases import BACKENDS, DatabaseFactory


@dataclass
class World:
    database: Database
    sessions: Sessions
    passwords: Passwords

    async def user(self) -> uuid.UUID:
        async with self.database.transaction() as session:
            user, _ = await Accounts(session, None, self.passwords).register(
                f"{unique('u')}@example.com", PASSWORD)
        return user.id

    async def login(self, user_id: uuid.UUID) -> str:
        async with self.database.transaction() as session:
            pair = await self.sessions.start(session, user_id, ["user"], [])
        return pair.refresh_token


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=BACKENDS)
async def world(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    server: Any = request.getfixturevalue("postgres") if request.param == "postgres" else None
    factory = DatabaseFactory(request.param, tmp_path_factory.mktemp("sessions"), server)
    database = Database(await factory.new())
    await migrations.upgrade(SERVICE_DIR, database)
    settings = AuthSettings(database_url=str(database.url), _env_file=None)
    keys = await KeyManager.open(MemoryKeyStore(), max_token_ttl=settings.max_token_ttl)
    passwords = Passwords(time_cost=1, memory_kib=1024, parallelism=1, concurrency=2)
    yield World(database, Sessions(database, TokenIssuer(keys, "auth"), settings), passwords)
    await database.dispose()
    await factory.drop_all()


async def outcome(world: World, token: str) -> str | None:
    try:
        return (await world.sessions.refresh(token)).refresh_token
    except InvalidRefreshTokenError:
        return None


async def test_of_concurrent_refreshes_of_one_token_exactly_one_wins(world: World) -> None:
    token = await world.login(await world.user())
    results = await asyncio.gather(*(outcome(world, token) for _ in range(12)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1, results
    # The losers were reuses: the family, the winner's new token included, is revoked.
    assert await outcome(world, winners[0]) is None


async def test_a_reuse_revokes_the_family_and_the_revocation_is_committed(world: World) -> None:
    user = await world.user()
    first = await world.login(user)
    other = await world.login(user)
    second = await outcome(world, first)
    assert second is not None
    assert await outcome(world, first) is None  # the reuse
    async with world.database.session() as session:
        family = (await session.execute(
            select(RefreshToken.revoked_at, RefreshToken.parent_id)
            .where(RefreshToken.user_id == user))).all()
    assert sum(1 for revoked, _ in family if revoked is not None) == 2, "first and second"
    assert await outcome(world, second) is None
    assert await outcome(world, other) is not None, "another family lives on"


async def test_revoke_all_ends_every_family_of_the_user_only(world: World) -> None:
    user, bystander = await world.user(), await world.user()
    tokens = [await world.login(user) for _ in range(3)]
    theirs = await world.login(bystander)
    async with world.database.transaction() as session:
        await world.sessions.revoke_all(session, user)
    assert [await outcome(world, t) for t in tokens] == [None, None, None]
    assert await outcome(world, theirs) is not None


async def test_an_expired_refresh_token_is_refused_and_revokes_nothing(world: World) -> None:
    user = await world.user()
    token = await world.login(user)
    async with world.database.transaction() as session:
        await session.execute(update(RefreshToken).where(RefreshToken.user_id == user)
                              .values(expires_at=RefreshToken.created_at))
    assert await outcome(world, token) is None
    assert await outcome(world, "never-issued") is None


ROUNDS = 30
REVOCATIONS = ["password_change", "logout", "reuse"]


async def revoke(world: World, how: str, user: uuid.UUID, first: str) -> None:
    """Revoke the family `first` started, as a password change, a logout or a reuse of
    `first` (already used) would."""
    if how == "reuse":
        assert await outcome(world, first) is None
        return
    async with world.database.transaction() as session:
        if how == "logout":
            await world.sessions.logout(session, first, user)
        else:
            await world.sessions.revoke_all(session, user)


async def thief(world: World, token: str, going: asyncio.Event,
                revoked: asyncio.Event) -> bool:
    """Refresh in a loop until refused; True if a refresh that began after the revocation
    committed still succeeded (the session outlived its revocation)."""
    while True:
        began_after = revoked.is_set()
        token = await outcome(world, token) or ""
        if not token:
            return False
        if began_after:
            return True
        going.set()


@pytest.mark.parametrize("how", REVOCATIONS)
async def test_a_refresh_racing_a_revocation_never_outlives_it(world: World, how: str) -> None:
    survived = 0
    for _ in range(ROUNDS):
        user = await world.user()
        first = await world.login(user)
        second = await outcome(world, first)
        assert second is not None
        going, revoked = asyncio.Event(), asyncio.Event()
        loop = asyncio.create_task(thief(world, second, going, revoked))
        await going.wait()
        await revoke(world, how, user, first)
        revoked.set()
        survived += await loop
    assert survived == 0, f"the session outlived {survived} of {ROUNDS} revocations"


async def test_a_login_racing_a_password_change_never_outlives_it(world: World) -> None:
    """Whichever commits first, the login's session (made with the old password) is dead
    once the change is committed: revoked by it, or refused for the old password."""
    store = DatabaseFailureStore(world.database)
    lenient = ThrottlePolicy("any", 60, 10_000, 10_000, 1, 1, 1)
    throttle = LoginThrottle(store, lenient, lenient)
    user = await world.user()
    async with world.database.session() as session:
        email = (await Accounts(session, None, world.passwords).get(user)).email
    current, alive = PASSWORD, []
    for round_ in range(ROUNDS):
        new = f"{PASSWORD}-{round_}"

        async def log_in(old: str = current) -> str | None:
            async with world.database.transaction() as session:
                try:
                    pair = await flows.login(Accounts(session, None, world.passwords),
                                             world.sessions, throttle, email=email,
                                             password=old, client="test")
                except InvalidCredentialsError:
                    return None
            return pair.refresh_token

        async def change(old: str = current, new: str = new) -> None:
            async with world.database.transaction() as session:
                await flows.change_password(
                    Accounts(session, None, world.passwords), world.sessions, throttle,
                    Principal(str(user), "user"), current=old, new=new, client="test")

        token, _ = await asyncio.gather(log_in(), change())
        current = new
        if token is not None and await outcome(world, token) is not None:
            alive.append(round_)
    assert not alive, f"a login with the old password outlived {len(alive)} of {ROUNDS} changes"
