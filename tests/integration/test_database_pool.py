"""`Database`'s connection pool against the real servers: it keeps the PostgreSQL connections it
opened, never hands out one the server closed (the cheap liveness check that replaced
`pool_pre_ping`), pings one that sat idle, and on SQLite still rolls back what was left open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from core.db import engine as engine_module
from core.db.engine import POOL_SIZE, Database
from tests.integration.databases import DatabaseFactory


@pytest.fixture
async def pg(postgres: object, tmp_path: Path) -> AsyncIterator[Database]:
    factory = DatabaseFactory("postgres", tmp_path, postgres)
    database = Database(await factory.new())
    yield database
    await database.dispose()
    await factory.drop_all()


async def _pids(database: Database, n: int) -> set[int]:
    """The server processes behind `n` sessions held at once."""
    started = asyncio.Event()
    pids: list[int] = []

    async def one() -> None:
        async with database.sessions() as session:
            pids.append((await session.execute(text("select pg_backend_pid()"))).scalar_one())
            if len(pids) == n:
                started.set()
            await started.wait()

    await asyncio.gather(*(one() for _ in range(n)))
    return set(pids)


async def _terminate(database: Database, pids: set[int]) -> None:
    """Kill the server processes, from a connection of another pool."""
    admin = Database(database.url.render_as_string(hide_password=False))
    async with admin.sessions() as session:
        for pid in pids:
            await session.execute(text("select pg_terminate_backend(:pid)"), {"pid": pid})
    await admin.dispose()


@pytest.mark.postgres
async def test_connections_past_the_fifth_are_kept_not_reopened(pg: Database) -> None:
    first = await _pids(pg, 12)
    second = await _pids(pg, 12)
    assert len(first) == 12 and second == first
    assert pg.engine.pool.size() == POOL_SIZE  # type: ignore[attr-defined]


@pytest.mark.postgres
async def test_connections_the_server_closed_are_replaced_unseen(pg: Database) -> None:
    victims = await _pids(pg, 4)
    await _terminate(pg, victims)
    await asyncio.sleep(0.2)  # the loop sees the sockets close while they sit in the pool
    after = await _pids(pg, 4)
    assert not after & victims and len(after) == 4


@pytest.mark.postgres
async def test_a_connection_idle_past_the_limit_is_pinged_before_use(
        pg: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = await _pids(pg, 2)
    pings: list[object] = []
    dialect = pg.engine.sync_engine.dialect
    original = dialect.do_ping

    def counted(connection: object) -> bool:
        pings.append(connection)
        return original(connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    await _pids(pg, 2)  # used a moment ago: no ping
    assert pings == []
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE", 0.0)  # every one idle too long
    assert await _pids(pg, 2) == kept  # each checkout pinged, each connection answered
    assert len(pings) == 2


async def test_sqlite_still_rolls_back_what_a_session_left_open(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}")
    async with database.sessions() as session:
        await session.execute(text("create table t (n integer)"))
        await session.commit()
    async with database.sessions() as session:
        await session.execute(text("insert into t values (1)"))  # never committed
    async with database.sessions() as session:
        await session.execute(text("insert into t values (2)"))
        await session.commit()
    async with database.sessions() as session:
        rows = (await session.execute(text("select n from t"))).scalars().all()
    assert rows == [2]
    await database.dispose()
