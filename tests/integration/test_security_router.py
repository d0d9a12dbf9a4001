"""core.security's dependencies as BaseRouter permissions, on the sample service's widgets,
over a real SQLite database: 401 without or with a bad token, 403 without the permission,
the owner (loaded from the row through the request's session) or a permission holder."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import delete

from core.bases import BaseRouter, Permissions
from core.bases.deps import SessionDep
from core.db import migrations
from core.db.engine import Database
from core.messaging.outbox import OutboxWriter
from core.messaging.serialization import EventRegistry, EventSerializer
from core.security import (
    KeyManager,
    LocalKeySource,
    MemoryKeyStore,
    Security,
    TokenIssuer,
    TokenVerifier,
    install_security,
    owner_or,
    require_permission,
    require_role,
)
from tests.integration.databases import DatabaseFactory
from tests.sample_service.app import create_app
from tests.sample_service.events import WidgetCreated, WidgetDeleted
from tests.sample_service.models import Base, Widget
from tests.sample_service.schemas import WidgetCreate, WidgetPublic, WidgetUpdate
from tests.sample_service.service import WidgetService
from tests.security_support import AUDIENCE, ISSUER

SAMPLE = Path(__file__).resolve().parents[1] / "sample_service"


async def widget_owner(id: str, session: SessionDep) -> str | None:
    """The sample widgets keep their owner's subject in `note`."""
    try:
        widget = await session.get(Widget, uuid.UUID(id))
    except ValueError:
        return None
    return widget.note if widget else None


secure = BaseRouter(
    WidgetService, prefix="/secure-widgets",
    create_schema=WidgetCreate, update_schema=WidgetUpdate, public_schema=WidgetPublic,
    permissions=Permissions(
        create=[require_permission("widgets:write")],
        update=[owner_or("widgets:write", owner_of=widget_owner)],
        delete=[require_role("admin"), require_permission("widgets:write")],
    ),
)


@pytest.fixture(scope="module")
async def database(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    factory = DatabaseFactory("sqlite", tmp_path_factory.mktemp("secure"), None)
    db = Database(await factory.new())
    await migrations.upgrade(SAMPLE, db)
    yield db
    await db.dispose()


@pytest.fixture
async def issuer() -> TokenIssuer:
    return TokenIssuer(await KeyManager.open(MemoryKeyStore()), ISSUER)


@pytest.fixture
async def http(database: Database, issuer: TokenIssuer) -> AsyncIterator[AsyncClient]:
    async with database.transaction() as session:
        await session.execute(delete(Widget))
    events = EventRegistry()
    events.register(WidgetCreated)
    events.register(WidgetDeleted)
    app = create_app(database, OutboxWriter(Base.metadata, EventSerializer(events)))
    app.include_router(secure)
    install_security(app, Security(TokenVerifier(LocalKeySource(issuer.keys), issuer=ISSUER,
                                                  audience=AUDIENCE)))
    async with AsyncClient(transport=ASGITransport(app), base_url="http://test") as client:
        yield client


def as_(issuer: TokenIssuer, sub: str, *permissions: str, roles: tuple[str, ...] = ()
        ) -> dict[str, str]:
    token = issuer.issue(sub, AUDIENCE, 60, permissions=permissions, roles=roles)
    return {"authorization": f"Bearer {token}"}


def widget(**fields: Any) -> dict[str, Any]:
    return {"name": "w", "sku": f"S-{uuid.uuid4().hex[:8].upper()}", "price_cents": 5, **fields}


async def test_create_needs_a_token_and_the_permission(http: AsyncClient,
                                                       issuer: TokenIssuer) -> None:
    anonymous = await http.post("/secure-widgets", json=widget())
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    reader = await http.post("/secure-widgets", json=widget(), headers=as_(issuer, "u-1"))
    assert reader.status_code == 403
    assert reader.json()["error"]["message"] == "missing permission widgets:write"
    writer = await http.post("/secure-widgets", json=widget(),
                             headers=as_(issuer, "u-1", "widgets:write"))
    assert writer.status_code == 201, writer.text
    listed = await http.get("/secure-widgets")
    assert listed.status_code == 200 and len(listed.json()["data"]) == 1, "reads are open"


async def test_a_forged_token_is_401_and_nothing_is_written(http: AsyncClient,
                                                            issuer: TokenIssuer) -> None:
    other = TokenIssuer(await KeyManager.open(MemoryKeyStore()), ISSUER)
    forged = await http.post("/secure-widgets", json=widget(),
                             headers=as_(other, "u-1", "widgets:write"))
    assert forged.status_code == 401
    assert forged.json()["error"]["fields"][0]["code"] == "unknown_kid"
    assert (await http.get("/secure-widgets")).json()["data"] == []


async def test_update_is_for_the_owner_or_a_permission_holder(http: AsyncClient,
                                                              issuer: TokenIssuer) -> None:
    created = await http.post("/secure-widgets", json=widget(note="owner-1"),
                              headers=as_(issuer, "admin", "widgets:write"))
    path = f"/secure-widgets/{created.json()['data']['id']}"
    owner = await http.patch(path, json={"name": "mine"}, headers=as_(issuer, "owner-1"))
    assert owner.status_code == 200, owner.text
    stranger = await http.patch(path, json={"name": "theirs"}, headers=as_(issuer, "owner-2"))
    assert stranger.status_code == 403
    editor = await http.patch(path, json={"name": "edited"},
                              headers=as_(issuer, "owner-2", "widgets:write"))
    assert editor.status_code == 200
    assert (await http.get(path)).json()["data"]["name"] == "edited"
    missing = await http.patch(f"/secure-widgets/{uuid.uuid4()}", json={"name": "x"},
                               headers=as_(issuer, "owner-1"))
    assert missing.status_code == 403, "no row, no owner: refused before the 404"


async def test_delete_needs_every_check(http: AsyncClient, issuer: TokenIssuer) -> None:
    created = await http.post("/secure-widgets", json=widget(),
                              headers=as_(issuer, "u", "widgets:write"))
    path = f"/secure-widgets/{created.json()['data']['id']}"
    assert (await http.delete(path, headers=as_(issuer, "u", "widgets:write"))).status_code == 403
    assert (await http.delete(path, headers=as_(issuer, "u", roles=("admin",)))).status_code == 403
    done = await http.delete(path, headers=as_(issuer, "u", "widgets:write", roles=("admin",)))
    assert done.status_code in (200, 204), done.text


async def test_the_openapi_declares_the_bearer_scheme(http: AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    create = spec["paths"]["/secure-widgets"]["post"]
    assert {"HTTPBearer": []} in create["security"]
    assert {"401", "403"} <= set(create["responses"])
