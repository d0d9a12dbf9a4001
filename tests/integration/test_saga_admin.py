"""Operators' view of sagas, on SQLite and the real PostgreSQL: `python -m core sagas
list|show|retry` and the admin routes (`saga_admin_router`) behind `sagas:read` / `sagas:write`.
A saga is driven to `needs_attention` by replies handed straight to the orchestrator (no broker:
what is tested here is the reading and the retry)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from core.bases import install_exception_handlers
from core.db import Database
from core.messaging import EventSerializer, OutboxWriter
from core.resilience import RetryPolicy
from core.saga import (
    COMPENSATING,
    NEEDS_ATTENTION,
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
from tests.helpers import cli
from tests.integration.databases import DatabaseFactory
from tests.saga_rig import (
    Done,
    DoneData,
    Refused,
    RefusedData,
    TripData,
    answer,
    create_schema,
    events,
    metadata,
    tables,
    trip_saga,
)
from tests.security_support import AUDIENCE, ISSUER

SERVICE = ["tests/sample_service", "--metadata", "tests.saga_rig:metadata"]


@dataclass
class Stuck:
    url: str
    db: Database
    sagas: SagaOrchestrator
    saga_id: str
    done_id: str


@pytest.fixture
async def stuck(databases: DatabaseFactory) -> AsyncIterator[Stuck]:
    """One saga stuck in needs_attention (its only compensation attempt refused), one done."""
    url = await databases.new()
    await create_schema(url)
    db = Database(url)
    saga = trip_saga("trip-commands", "trip-replies")
    sagas = SagaOrchestrator(db, OutboxWriter(metadata, EventSerializer(events())), tables,
                             [saga], compensation_retry=RetryPolicy(max_attempts=1))
    async with db.transaction() as session:
        saga_id = await sagas.begin(session, saga, TripData(trip="stuck"))
        done_id = await sagas.begin(session, saga, TripData(trip="done"))
    await answer(sagas, saga_id, Done(data=DoneData(action="reserve", ref="s-1")))
    await answer(sagas, saga_id, Refused(data=RefusedData(action="charge", reason="declined")))
    await answer(sagas, saga_id, Refused(data=RefusedData(action="release", reason="locked")))
    for action in ("reserve", "charge", "confirm"):
        await answer(sagas, done_id, Done(data=DoneData(action=action, ref=action)))
    assert (await sagas.get(saga_id)).status == NEEDS_ATTENTION
    yield Stuck(url, db, sagas, saga_id, done_id)
    await db.dispose()


async def test_the_command_line_lists_shows_and_retries_a_stuck_saga(stuck: Stuck) -> None:
    listed = await cli("sagas", "list", *SERVICE, "--url", stuck.url)
    assert listed.exit_code == 0, listed.output
    assert "2 saga(s); completed 1, needs_attention 1" in listed.output
    only = await cli("sagas", "list", *SERVICE, "--url", stuck.url, "--status", NEEDS_ATTENTION)
    assert stuck.saga_id in only.output and stuck.done_id not in only.output
    assert "compensation of seat failed (attempt 1)" in only.output

    shown = await cli("sagas", "show", *SERVICE, stuck.saga_id, "--url", stuck.url)
    assert shown.exit_code == 0, shown.output
    assert f"saga {stuck.saga_id} (trip): needs_attention at step 0" in shown.output
    assert "RefusedData" not in shown.output and "test.saga.refused: locked" in shown.output
    for event in ("started", "succeeded", "failed", "compensation_sent",
                  "compensation_failed"):
        assert f"│ {event}" in shown.output, event

    retried = await cli("sagas", "retry", *SERVICE, stuck.saga_id, "--url", stuck.url)
    assert retried.exit_code == 0, retried.output
    record = await stuck.sagas.get(stuck.saga_id)
    assert (record.status, record.attempts, record.command_id) == (COMPENSATING, 0, None)
    assert await stuck.sagas.sweep() == 1  # a running instance sends the compensation again
    history = [(h.event, h.detail) for h in await stuck.sagas.history(stuck.saga_id)]
    assert history[-2][0] == "retried"
    assert history[-1][0] == "compensation_sent" and "attempt 1" in (history[-1][1] or "")

    again = await cli("sagas", "retry", *SERVICE, stuck.saga_id, "--url", stuck.url)
    assert again.exit_code == 1 and "does not need attention" in again.output
    missing = await cli("sagas", "show", *SERVICE, "no-such-saga", "--url", stuck.url)
    assert missing.exit_code == 1 and "no saga no-such-saga" in missing.output
    bad = await cli("sagas", "list", *SERVICE, "--url", stuck.url, "--status", "lost")
    assert bad.exit_code == 2


@pytest.fixture
async def issuer() -> TokenIssuer:
    return TokenIssuer(await KeyManager.open(MemoryKeyStore()), ISSUER)


@pytest.fixture
async def http(stuck: Stuck, issuer: TokenIssuer) -> AsyncIterator[AsyncClient]:
    async def orchestrator() -> SagaOrchestrator:
        return stuck.sagas

    app = FastAPI()
    install_exception_handlers(app)
    app.include_router(saga_admin_router(orchestrator=orchestrator))
    install_security(app, Security(TokenVerifier(LocalKeySource(issuer.keys), issuer=ISSUER,
                                                  audience=AUDIENCE)))
    async with AsyncClient(transport=ASGITransport(app), base_url="http://test") as client:
        yield client


def as_(issuer: TokenIssuer, *permissions: str) -> dict[str, str]:
    token = issuer.issue("admin-1", AUDIENCE, 60, permissions=permissions)
    return {"authorization": f"Bearer {token}"}


async def test_the_admin_routes_list_show_and_retry_behind_their_permissions(
    http: AsyncClient, issuer: TokenIssuer, stuck: Stuck
) -> None:
    assert (await http.get("/sagas")).status_code == 401
    assert (await http.get("/sagas", headers=as_(issuer, "drivers:read"))).status_code == 403
    reader, writer = as_(issuer, "sagas:read"), as_(issuer, "sagas:read", "sagas:write")

    page = await http.get("/sagas", params={"status": NEEDS_ATTENTION}, headers=reader)
    assert page.status_code == 200, page.text
    body = page.json()
    assert [s["id"] for s in body["data"]] == [stuck.saga_id]
    assert body["counts"] == {"completed": 1, NEEDS_ATTENTION: 1}
    assert body["data"][0]["step_name"] == "seat"
    assert (await http.get("/sagas", params={"status": "lost"}, headers=reader)
            ).status_code == 422

    shown = (await http.get(f"/sagas/{stuck.saga_id}", headers=reader)).json()
    assert shown["status"] == NEEDS_ATTENTION and shown["data"]["seat"] == "s-1"
    assert "locked" in shown["last_error"]
    assert [h["event"] for h in shown["history"]] == [
        "started", "sent", "succeeded", "sent", "failed", "compensation_sent",
        "compensation_failed"]
    assert all(h["at"] for h in shown["history"])
    assert (await http.get("/sagas/nope", headers=reader)).status_code == 404

    assert (await http.post(f"/sagas/{stuck.saga_id}/retry", headers=reader)).status_code == 403
    retried = await http.post(f"/sagas/{stuck.saga_id}/retry", headers=writer)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == COMPENSATING
    assert retried.json()["history"][-1]["event"] == "compensation_sent"
    assert (await http.post(f"/sagas/{stuck.saga_id}/retry", headers=writer)
            ).status_code == 409
    assert (await http.post(f"/sagas/{stuck.done_id}/retry", headers=writer)).status_code == 409
