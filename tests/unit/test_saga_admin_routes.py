"""The saga admin routes' own rules on SQLite: filtering, paging and its bounds, a saga the
service has no definition for, and what the OpenAPI document promises. Reading, retrying and
the permissions on real sagas: tests/integration/test_saga_admin.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import insert

from core.bases import install_exception_handlers
from core.db import Database
from core.messaging import EventSerializer, OutboxWriter
from core.saga import (
    COMPLETED,
    NEEDS_ATTENTION,
    RUNNING,
    SagaOrchestrator,
    saga_admin_router,
)
from core.security import (
    KeyManager,
    LocalKeySource,
    MemoryKeyStore,
    Security,
    TokenIssuer,
    TokenVerifier,
    install_security,
)
from tests.saga_rig import create_schema, events, metadata, tables, trip_saga
from tests.security_support import AUDIENCE, ISSUER


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}"
    await create_schema(url)
    database = Database(url)
    yield database
    await database.dispose()


@pytest.fixture
async def issuer() -> TokenIssuer:
    return TokenIssuer(await KeyManager.open(MemoryKeyStore()), ISSUER)


def app(sagas: SagaOrchestrator, issuer: TokenIssuer, **options: Any) -> FastAPI:
    async def orchestrator() -> SagaOrchestrator:
        return sagas

    built = FastAPI()
    install_exception_handlers(built)
    built.include_router(saga_admin_router(orchestrator=orchestrator, **options))
    install_security(built, Security(TokenVerifier(LocalKeySource(issuer.keys), issuer=ISSUER,
                                                   audience=AUDIENCE)))
    return built


@pytest.fixture
async def http(db: Database, issuer: TokenIssuer) -> AsyncIterator[AsyncClient]:
    sagas = SagaOrchestrator(db, OutboxWriter(metadata, EventSerializer(events())), tables,
                             [trip_saga("cmds", "replies")])
    token = issuer.issue("admin-1", AUDIENCE, 60, permissions=["sagas:read"])
    async with AsyncClient(transport=ASGITransport(app(sagas, issuer)), base_url="http://test",
                           headers={"authorization": f"Bearer {token}"}) as client:
        yield client


async def add(db: Database, saga_id: str, status: str = RUNNING, *, created: int = 0,
              saga_type: str = "trip", step: int = 0, correlation_id: str | None = None) -> None:
    now = datetime.now(UTC)
    async with db.transaction() as session:
        await session.execute(insert(tables.instances).values(
            id=saga_id, saga_type=saga_type, data={}, status=status, step=step, attempts=0,
            version=1, created_at=now + timedelta(seconds=created), updated_at=now,
            correlation_id=correlation_id))
        await session.execute(insert(tables.steps).values(
            saga_id=saga_id, step=step, step_name="seat", event="started", status=status,
            detail=f"begun as {saga_id}", at=now))


async def ids(http: AsyncClient, **params: Any) -> list[str]:
    page = await http.get("/sagas", params=params)
    assert page.status_code == 200, page.text
    return [s["id"] for s in page.json()["data"]]


async def test_the_list_filters_by_status_and_type_and_pages_within_bounds(
    http: AsyncClient, db: Database,
) -> None:
    for i in range(52):
        await add(db, f"s{i:02}", COMPLETED if i % 2 else RUNNING, created=i)
    await add(db, "other", RUNNING, created=99, saga_type="other")
    assert len(await ids(http)) == 50  # a page by default
    assert (await ids(http))[:2] == ["other", "s51"]
    assert await ids(http, type="other") == ["other"]
    assert await ids(http, status=COMPLETED, limit=2, offset=1) == ["s49", "s47"]
    assert await ids(http, limit=1) == ["other"]
    assert len(await ids(http, limit=500)) == 53
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"offset": 2**63},
                {"type": "t" * 101}, {"status": "xrunningx"}):
        assert (await http.get("/sagas", params=bad)).status_code == 422, bad
    assert await ids(http, offset=2**63 - 1) == []  # the largest offset SQL takes
    assert await ids(http, type="t" * 100) == []


async def test_a_saga_the_service_has_no_definition_for_is_shown_without_a_step_name(
    http: AsyncClient, db: Database,
) -> None:
    await add(db, "retired", NEEDS_ATTENTION, saga_type="retired", correlation_id="req-9")
    await add(db, "beyond", RUNNING, step=3)
    await add(db, "last", RUNNING, step=2, created=-1)
    names = {s["id"]: s["step_name"] for s in (await http.get("/sagas")).json()["data"]}
    assert names == {"retired": None, "beyond": None, "last": "confirm"}
    shown = await http.get("/sagas/retired")
    assert shown.status_code == 200 and shown.json()["step_name"] is None
    assert shown.json()["correlation_id"] == "req-9"
    assert [(h["event"], h["detail"]) for h in shown.json()["history"]] == [
        ("started", "begun as retired")]


async def test_the_routes_say_what_they_answer_under_the_prefix_and_permissions_given(
    db: Database, issuer: TokenIssuer,
) -> None:
    sagas = SagaOrchestrator(db, OutboxWriter(metadata, EventSerializer(events())), tables, [])
    default = app(sagas, issuer).openapi()
    listed, shown = default["paths"]["/sagas"]["get"], default["paths"]["/sagas/{saga_id}"]
    retried = default["paths"]["/sagas/{saga_id}/retry"]["post"]
    assert listed["tags"] == ["sagas"]
    assert {"200", "401", "403", "422"} <= set(listed["responses"])
    assert {"200", "401", "403", "404"} <= set(shown["get"]["responses"])
    assert {"200", "401", "403", "404", "409"} <= set(retried["responses"])
    custom = app(sagas, issuer, prefix="/ops/sagas", read="ops:read", tags=["ops"]).openapi()
    assert custom["paths"]["/ops/sagas"]["get"]["tags"] == ["ops"]
    token = issuer.issue("op-1", AUDIENCE, 60, permissions=["ops:read"])
    async with AsyncClient(transport=ASGITransport(app(sagas, issuer, prefix="/ops/sagas",
                                                       read="ops:read")),
                           base_url="http://test") as client:
        page = await client.get("/ops/sagas", headers={"authorization": f"Bearer {token}"})
    assert page.status_code == 200 and page.json() == {"data": [], "counts": {}}
