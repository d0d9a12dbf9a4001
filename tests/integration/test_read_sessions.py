"""`SessionDep` by method, against the real servers: a GET sends the database no BEGIN or
COMMIT (seen in the statements the driver sends: asyncpg's query log, SQLite's own trace; and
PostgreSQL's pg_stat_activity shows no transaction held open between a GET's statements),
cannot write, and a write method still commits atomically; `SnapshotDep` keeps one snapshot
across two statements while another connection commits in between (and `SessionDep`, the
control, does not)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Column, Integer, MetaData, String, Table, event, func, insert, select
from sqlalchemy import column as text_column
from sqlalchemy import table as text_table
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.util import await_

from core.bases import SessionDep, install_exception_handlers
from core.bases.deps import SnapshotDep, TransactionDep, attach
from core.db.engine import Database, ReadOnlySessionError

metadata = MetaData()
notes = Table("notes", metadata, Column("id", Integer, primary_key=True),
              Column("text", String(50), nullable=False, unique=True))


class Base(DeclarativeBase):
    metadata = metadata


class Note(Base):
    __table__ = notes


@dataclass
class Rig:
    database: Database
    client: httpx.AsyncClient
    sent: list[str]
    """Every statement the driver sent the server, in order (BEGIN and COMMIT included)."""
    first_read: asyncio.Event = field(default_factory=asyncio.Event)
    other_committed: asyncio.Event = field(default_factory=asyncio.Event)
    pids: list[int] = field(default_factory=list)

    def transaction_statements(self) -> list[str]:
        return [s for s in self.sent
                if s.split(None, 1)[0].rstrip(";").upper() in {"BEGIN", "COMMIT", "ROLLBACK"}]


def _trace(database: Database, sent: list[str]) -> None:
    """Record what each new connection sends, from the driver's side of the wire."""

    def connected(dbapi_connection: Any, _: Any) -> None:
        driver = dbapi_connection.driver_connection
        if database.dialect == "sqlite":
            await_(driver.set_trace_callback(sent.append))
        else:
            driver.add_query_logger(lambda logged: sent.append(logged.query))

    event.listen(database.engine.sync_engine, "connect", connected)


def _app(rig: Callable[[], Rig]) -> FastAPI:
    app = FastAPI()
    install_exception_handlers(app)

    async def count(session: Any) -> int:
        return int((await session.execute(select(func.count()).select_from(notes))).scalar())

    async def twice(session: Any) -> dict[str, int]:
        """Count, let another connection commit a row, count again."""
        first = await count(session)
        rig().first_read.set()
        await rig().other_committed.wait()
        return {"first": first, "second": await count(session)}

    @app.get("/notes/count")
    async def read(session: SessionDep) -> dict[str, int]:
        return {"count": await count(session)}

    @app.post("/notes")
    async def create(body: dict[str, str], session: SessionDep) -> dict[str, int]:
        await session.execute(insert(notes).values(text=body["text"]))
        if body.get("then") == "fail":
            await session.execute(insert(notes).values(text=body["text"]))  # unique: fails
        return {"count": await count(session)}

    @app.get("/notes/write")
    async def write_on_get(session: SessionDep) -> None:
        await session.execute(insert(notes).values(text="from a GET"))

    @app.get("/notes/write-in-transaction")
    async def write_in_transaction(session: TransactionDep) -> None:
        await session.execute(insert(notes).values(text="from a GET, in a transaction"))

    async def hold(session: Any) -> dict[str, int]:
        """Say which server process serves the session, then wait between two statements."""
        pid = (await session.execute(select(func.pg_backend_pid()))).scalar_one()
        rig().pids.append(int(pid))
        rig().first_read.set()
        await rig().other_committed.wait()
        return {"count": await count(session)}

    @app.get("/notes/hold")
    async def hold_on_get(session: SessionDep) -> dict[str, int]:
        return await hold(session)

    @app.post("/notes/hold")
    async def hold_on_post(session: SessionDep) -> dict[str, int]:
        return await hold(session)

    @app.get("/notes/twice")
    async def read_twice(session: SessionDep) -> dict[str, int]:
        return await twice(session)

    @app.get("/notes/snapshot")
    async def snapshot(session: SnapshotDep) -> dict[str, int]:
        return await twice(session)

    return app


@pytest.fixture
async def rig(db_url: str) -> AsyncIterator[Rig]:
    database = Database(db_url)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    sent: list[str] = []
    _trace(database, sent)
    await database.engine.dispose()  # connections made from now on are traced
    holder: list[Rig] = []
    app = _app(lambda: holder[0])
    attach(app, database)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        holder.append(Rig(database, client, sent))
        yield holder[0]
    await database.dispose()


async def _notes(rig: Rig) -> list[str]:
    async with rig.database.transaction() as session:
        return list((await session.execute(select(notes.c.text).order_by(notes.c.id))).scalars())


async def test_a_get_sends_no_begin_or_commit_and_a_post_does(rig: Rig) -> None:
    response = await rig.client.get("/notes/count")
    assert response.status_code == 200 and response.json() == {"count": 0}
    if rig.database.dialect == "sqlite":  # asyncpg logs no prepared statements, only BEGIN...
        assert any("notes" in s for s in rig.sent)  # the trace sees the statements
    assert rig.transaction_statements() == []

    response = await rig.client.post("/notes", json={"text": "one"})
    assert response.status_code == 200 and response.json() == {"count": 1}
    said = [s.split(None, 1)[0].rstrip(";").upper() for s in rig.transaction_statements()]
    assert said == ["BEGIN", "COMMIT"]


async def test_a_write_method_commits_all_or_nothing(rig: Rig) -> None:
    assert (await rig.client.post("/notes", json={"text": "kept"})).status_code == 200
    failed = await rig.client.post("/notes", json={"text": "dropped", "then": "fail"})
    assert failed.status_code in (409, 500)
    assert await _notes(rig) == ["kept"]  # the first insert of the failed request rolled back


async def test_a_get_cannot_write_through_session_dep(rig: Rig) -> None:
    response = await rig.client.get("/notes/write")
    assert response.status_code == 500
    assert await _notes(rig) == []
    # a safe route that must write asks for a transaction, and gets one
    assert (await rig.client.get("/notes/write-in-transaction")).status_code == 200
    assert await _notes(rig) == ["from a GET, in a transaction"]


async def test_a_read_session_refuses_to_flush_a_change(rig: Rig) -> None:
    assert (await rig.client.post("/notes", json={"text": "stored"})).status_code == 200
    async with rig.database.reads() as session:
        note = (await session.execute(select(Note))).scalar_one()
        note.text = "changed"  # type: ignore[attr-defined]
        with pytest.raises(ReadOnlySessionError):
            await session.flush()
    async with rig.database.reads() as session:
        session.add(Note(text="new"))
        with pytest.raises(ReadOnlySessionError):
            await session.execute(select(Note))  # autoflush
    assert await _notes(rig) == ["stored"]


async def _read_while_another_commits(rig: Rig, path: str) -> dict[str, int]:
    request = asyncio.create_task(rig.client.get(path))
    await asyncio.wait_for(rig.first_read.wait(), 10)
    other = Database(rig.database.url.render_as_string(hide_password=False))
    try:
        async with other.transaction() as session:
            await session.execute(insert(notes).values(text="committed in between"))
    finally:
        await other.dispose()
    rig.other_committed.set()
    response = await asyncio.wait_for(request, 10)
    assert response.status_code == 200, response.text
    result: dict[str, int] = response.json()
    return result


async def test_snapshot_dep_sees_one_snapshot_across_statements(rig: Rig) -> None:
    assert await _read_while_another_commits(rig, "/notes/snapshot") == {"first": 0,
                                                                         "second": 0}
    assert await _notes(rig) == ["committed in between"]


async def test_session_dep_on_a_get_sees_each_statement_s_own_commits(rig: Rig) -> None:
    """The control: without a snapshot the second statement sees the other's commit."""
    assert await _read_while_another_commits(rig, "/notes/twice") == {"first": 0, "second": 1}


async def _state_between_statements(rig: Rig, method: str) -> str:
    """pg_stat_activity's state of the request's server process while the route waits."""
    rig.first_read.clear()
    rig.other_committed.clear()
    request = asyncio.create_task(rig.client.request(method, "/notes/hold"))
    await asyncio.wait_for(rig.first_read.wait(), 10)
    other = Database(rig.database.url.render_as_string(hide_password=False))
    try:
        async with other.transaction() as session:
            state = (await session.execute(select(func.coalesce(
                select(text_column("state")).select_from(text_table("pg_stat_activity"))
                .where(text_column("pid") == rig.pids[-1]).scalar_subquery(), "gone"))
            )).scalar_one()
    finally:
        await other.dispose()
        rig.other_committed.set()
    assert (await asyncio.wait_for(request, 10)).status_code == 200
    return str(state)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_postgres_holds_no_transaction_open_between_a_get_s_statements(rig: Rig) -> None:
    assert await _state_between_statements(rig, "GET") == "idle"
    assert await _state_between_statements(rig, "POST") == "idle in transaction"  # control
