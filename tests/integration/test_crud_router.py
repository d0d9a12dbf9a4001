"""CRUD through BaseRouter on the sample service, over HTTP, on SQLite and real PostgreSQL.

The schema comes from the sample service's committed migrations; events go to its real outbox
table through core.messaging.outbox.OutboxWriter.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import delete, func, select

from core.bases import ConfigurationError, ConflictError
from core.db import migrations
from core.db.engine import Database
from core.messaging.outbox import OutboxWriter
from core.messaging.serialization import EventRegistry, EventSerializer
from devinfra.process import free_port
from tests.integration.databases import BACKENDS, open_databases
from tests.sample_service.app import create_app
from tests.sample_service.events import WidgetCreated, WidgetDeleted
from tests.sample_service.models import Base, Widget, outbox
from tests.sample_service.schemas import WidgetCreate
from tests.sample_service.service import WidgetRepository, WidgetService

SAMPLE = Path(__file__).resolve().parents[1] / "sample_service"
ADMIN = {"x-role": "admin"}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module", params=BACKENDS)
async def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    """One fresh database per module and backend, migrated by the committed history."""
    async with open_databases(request, tmp_path_factory.mktemp("crud")) as databases:
        db = Database(await databases.new())
        await migrations.upgrade(SAMPLE, db)
        yield db
        await db.dispose()


@pytest.fixture
def writer() -> OutboxWriter:
    events = EventRegistry()
    events.register(WidgetCreated)
    events.register(WidgetDeleted)
    return OutboxWriter(Base.metadata, EventSerializer(events))


@pytest.fixture
async def client(database: Database, writer: OutboxWriter) -> AsyncIterator[AsyncClient]:
    async with database.transaction() as session:
        await session.execute(delete(Widget))
        await session.execute(delete(outbox))
    app = create_app(database, writer)
    async with AsyncClient(transport=ASGITransport(app), base_url="http://test") as http:
        yield http


def sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:10].upper()}"


async def make(client: AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "widget", "sku": sku(), "price_cents": 100, **fields}
    response = await client.post("/widgets", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def error(response: Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def fields(response: Response) -> dict[str, dict[str, Any]]:
    return {f["field"]: f for f in error(response)["fields"]}


async def outbox_rows(database: Database) -> list[Any]:
    async with database.session() as session:
        return list((await session.execute(select(outbox).order_by(outbox.c.id))).all())


async def widget_count(database: Database) -> int:
    async with database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Widget)) or 0)


# --- create / read ---------------------------------------------------------------------------


async def test_create_answers_201_in_the_envelope_and_writes_the_event(
    client: AsyncClient, database: Database
) -> None:
    response = await client.post("/widgets", json={"name": "Bolt", "sku": "BOLT-1",
                                                   "price_cents": 250})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"data", "message"}
    assert body["message"] == "Widget created"
    data = body["data"]
    assert data["name"] == "Bolt" and data["sku"] == "BOLT-1" and data["status"] == "draft"
    assert data["deleted_at"] is None
    assert data["created_at"].endswith(("+00:00", "Z"))  # aware UTC on every backend
    uuid.UUID(data["id"])

    rows = await outbox_rows(database)
    assert [(r.topic, r.event_type, r.key) for r in rows] == [
        ("widget.events", "widget.created", data["id"])]

    fetched = await client.get(f"/widgets/{data['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == {"data": data, "message": None}


async def test_unknown_and_malformed_ids_are_404(client: AsyncClient) -> None:
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        response = await client.get(f"/widgets/{missing}")
        assert response.status_code == 404
        assert error(response)["code"] == "not_found"
        assert missing in error(response)["message"]
    assert (await client.patch(f"/widgets/{uuid.uuid4()}", json={"name": "x"})).status_code \
        == 404
    assert (await client.delete(f"/widgets/{uuid.uuid4()}")).status_code == 404


async def test_unknown_route_uses_the_error_body(client: AsyncClient) -> None:
    response = await client.get("/nothing-here")
    assert response.status_code == 404
    assert error(response) == {"code": "not_found", "message": "Not Found", "fields": []}


# --- validation ------------------------------------------------------------------------------


async def test_bad_input_is_422_with_a_reason_per_field(
    client: AsyncClient, database: Database
) -> None:
    response = await client.post("/widgets", json={"sku": "lowercase", "price_cents": -1,
                                                   "colour": "red"})
    assert response.status_code == 422
    assert error(response)["code"] == "validation_error"
    problems = fields(response)
    assert set(problems) == {"name", "sku", "price_cents", "colour"}
    assert problems["name"]["code"] == "missing"
    assert problems["price_cents"]["location"] == "body"
    assert "greater than or equal to 0" in problems["price_cents"]["reason"]
    assert problems["colour"]["code"] == "extra_forbidden"
    assert await widget_count(database) == 0


async def test_service_rules_and_nulls_are_422(client: AsyncClient) -> None:
    too_dear = await client.post("/widgets", json={"name": "w", "sku": sku(),
                                                   "price_cents": 10_000_000})
    assert too_dear.status_code == 422
    assert fields(too_dear)["price_cents"]["reason"] == "at most 1000000"

    widget = await make(client)
    nulled = await client.patch(f"/widgets/{widget['id']}", json={"name": None})
    assert nulled.status_code == 422
    assert fields(nulled)["name"]["code"] == "not_null"


async def test_query_parameters_are_validated(client: AsyncClient) -> None:
    assert (await client.get("/widgets", params={"size": 101})).status_code == 422
    response = await client.get("/widgets", params={"page": 0})
    assert response.status_code == 422
    assert fields(response)["page"]["location"] == "query"


# Found by schemathesis: values past what SQL holds reached the driver and overflowed (500).
HUGE = 48563777287923318784
INT64_MAX = 2**63 - 1


@pytest.mark.parametrize("name", ["page", "offset"])
async def test_paging_past_what_sql_holds_is_422_naming_the_parameter(
    client: AsyncClient, name: str
) -> None:
    response = await client.get("/widgets", params={name: HUGE})
    assert response.status_code == 422, response.text
    assert error(response)["code"] == "validation_error"
    problem = fields(response)[name]
    assert (problem["location"], problem["code"]) == ("query", "less_than_equal")


async def test_paging_up_to_what_sql_holds_answers_an_empty_page(client: AsyncClient) -> None:
    await make(client)
    last = await client.get("/widgets", params={"offset": INT64_MAX, "limit": 100})
    assert last.status_code == 200, last.text
    assert last.json()["data"] == [] and last.json()["meta"]["total"] == 1
    page = await client.get("/widgets", params={"page": INT64_MAX // 100 + 1, "size": 100})
    assert page.status_code == 200, page.text
    assert page.json()["data"] == []


async def test_an_integer_its_column_cannot_hold_is_422_naming_the_field(
    client: AsyncClient, database: Database
) -> None:
    widget = await make(client, price_cents=5)
    huge = 875319654497723533492224
    for response in (
        await client.patch(f"/widgets/{widget['id']}", json={"price_cents": huge}),
        await client.patch(f"/widgets/{widget['id']}", json={"price_cents": 2**31}),
        await client.post("/widgets", json={"name": "w", "sku": sku(), "price_cents": huge}),
    ):
        assert response.status_code == 422, response.text
        problem = fields(response)["price_cents"]
        assert (problem["location"], problem["code"]) == ("body", "less_than_equal")
        assert "2147483647" in problem["reason"]  # the Integer column's int32 bound
    assert (await client.get(f"/widgets/{widget['id']}")).json()["data"]["price_cents"] == 5
    assert await widget_count(database) == 1

    filtered = await client.get("/widgets", params={"price_cents__gte": huge})
    assert filtered.status_code == 422
    assert fields(filtered)["price_cents__gte"]["code"] == "invalid_value"


async def test_a_value_the_database_refuses_is_422_not_500(
    client: AsyncClient, database: Database
) -> None:
    response = await client.post("/widgets", json={"name": "nul\u0000", "sku": sku(),
                                                   "price_cents": 1})
    if database.dialect == "sqlite":  # SQLite stores NUL characters; PostgreSQL refuses them
        assert response.status_code == 201, response.text
        return
    assert response.status_code == 422, response.text
    assert error(response)["code"] == "validation_error"
    assert await widget_count(database) == 0
    listed = await client.get("/widgets", params={"name": "nul\u0000"})
    assert listed.status_code == 422, listed.text


@pytest.mark.parametrize("body", [b'{"name": ', b'{"name": "\xff"}', b"\xff\xfe\x00"])
async def test_a_body_that_is_not_json_is_400(client: AsyncClient, body: bytes) -> None:
    widget = await make(client)
    for response in (
        await client.post("/widgets", content=body, headers=JSON),
        await client.patch(f"/widgets/{widget['id']}", content=body, headers=JSON),
    ):
        assert response.status_code == 400, response.text
        assert error(response)["code"] == "bad_request"


async def test_every_status_a_route_answers_is_in_its_openapi(client: AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    declared = {(method, path): set(op["responses"]) for path, ops in paths.items()
                for method, op in ops.items()}
    assert declared[("post", "/widgets")] == {"201", "400", "409", "422", "500"}
    assert declared[("patch", "/widgets/{id}")] == {"200", "400", "404", "409", "422", "500"}
    assert declared[("get", "/widgets")] == {"200", "422", "500"}
    assert declared[("get", "/widgets/{id}")] == {"200", "404", "422", "500"}
    # behind permissions: the admins_only check may refuse
    assert {"401", "403"} <= declared[("post", "/widgets/{id}/restore")]
    assert {"401", "403"} <= declared[("get", "/widgets/deleted")]
    assert "403" not in declared[("delete", "/widgets/{id}")]
    error_body = {"$ref": "#/components/schemas/ErrorResponse"}
    for (method, path), statuses in declared.items():
        for status in statuses - {"200", "201"}:
            content = paths[path][method]["responses"][status]["content"]
            assert content["application/json"]["schema"] == error_body, (method, path, status)
    patch_schema = paths["/widgets/{id}"]["patch"]["requestBody"]["content"]["application/json"]
    bounded = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert patch_schema["schema"] == {"$ref": "#/components/schemas/WidgetUpdate"}
    price = bounded["WidgetUpdate"]["properties"]["price_cents"]["anyOf"][0]
    assert (price["minimum"], price["maximum"]) == (0, 2**31 - 1)


# --- conflicts -------------------------------------------------------------------------------


async def test_duplicate_unique_field_is_409_and_writes_nothing(
    client: AsyncClient, database: Database
) -> None:
    first = await make(client, sku="DUP-1")
    response = await client.post("/widgets", json={"name": "again", "sku": "DUP-1",
                                                   "price_cents": 1})
    assert response.status_code == 409
    assert error(response)["code"] == "conflict"
    assert fields(response)["sku"]["code"] == "unique"
    assert await widget_count(database) == 1
    assert len(await outbox_rows(database)) == 1  # only the first create's event

    other = await make(client, sku="DUP-2")
    clash = await client.patch(f"/widgets/{other['id']}", json={"sku": "DUP-1"})
    assert clash.status_code == 409
    assert (await client.get(f"/widgets/{other['id']}")).json()["data"]["sku"] == "DUP-2"
    assert (await client.get(f"/widgets/{first['id']}")).status_code == 200


async def test_service_conflict_rules_are_409(client: AsyncClient) -> None:
    active = await make(client, status="active")
    response = await client.delete(f"/widgets/{active['id']}")
    assert response.status_code == 409
    assert "retire" in error(response)["message"]
    assert (await client.patch(f"/widgets/{active['id']}", json={"sku": sku()})).status_code \
        == 409


# --- update ----------------------------------------------------------------------------------


async def test_patch_applies_only_the_fields_sent(client: AsyncClient) -> None:
    widget = await make(client, name="before", note="keep me", price_cents=5)
    response = await client.patch(f"/widgets/{widget['id']}", json={"name": "after"})
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Widget updated"
    updated = body["data"]
    assert updated["name"] == "after"
    assert updated["note"] == "keep me" and updated["price_cents"] == 5
    assert updated["updated_at"] > widget["updated_at"]
    assert updated["created_at"] == widget["created_at"]

    cleared = await client.patch(f"/widgets/{widget['id']}", json={"note": None})
    assert cleared.json()["data"]["note"] is None


# --- list: pagination, filters, ordering -----------------------------------------------------


async def test_pagination_meta_and_pages_cover_everything_once(client: AsyncClient) -> None:
    made = {(await make(client, price_cents=i))["id"] for i in range(23)}

    seen: list[str] = []
    for page in (1, 2, 3):
        response = await client.get("/widgets", params={"page": page, "size": 10})
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"data", "message", "meta"}
        assert body["meta"] == {"page": page, "size": 10, "total": 23, "pages": 3}
        assert len(body["data"]) == (10 if page < 3 else 3)
        seen += [w["id"] for w in body["data"]]
    assert len(seen) == 23 and set(seen) == made

    beyond = (await client.get("/widgets", params={"page": 4, "size": 10})).json()
    assert beyond["data"] == [] and beyond["meta"]["total"] == 23

    sliced = (await client.get("/widgets", params={"offset": 5, "limit": 4})).json()
    assert [w["id"] for w in sliced["data"]] == seen[5:9]
    assert sliced["meta"] == {"page": 2, "size": 4, "total": 23, "pages": 6}

    default = (await client.get("/widgets")).json()
    assert default["meta"] == {"page": 1, "size": 20, "total": 23, "pages": 2}


async def test_filters(client: AsyncClient) -> None:
    await make(client, name="Red Bolt", status="active", price_cents=100)
    await make(client, name="Blue bolt", status="draft", price_cents=200)
    await make(client, name="Nut 100%", status="retired", price_cents=300)

    async def names(**params: Any) -> list[str]:
        response = await client.get("/widgets", params={**params, "sort": "price_cents"})
        assert response.status_code == 200, response.text
        return [w["name"] for w in response.json()["data"]]

    assert await names(status="active") == ["Red Bolt"]
    assert await names(price_cents__gte="200") == ["Blue bolt", "Nut 100%"]
    assert await names(price_cents__lt=200, status__ne="retired") == ["Red Bolt"]
    assert await names(name__contains="BOLT") == ["Red Bolt", "Blue bolt"]
    assert await names(name__contains="100%") == ["Nut 100%"]
    assert await names(name__contains="%") == ["Nut 100%"]  # wildcards are literal
    assert await names(name__startswith="blue") == ["Blue bolt"]
    assert await names(status__in="active,retired") == ["Red Bolt", "Nut 100%"]
    repeated = await client.get("/widgets?status=active&status=draft&sort=price_cents")
    assert [w["name"] for w in repeated.json()["data"]] == ["Red Bolt", "Blue bolt"]
    assert repeated.json()["meta"]["total"] == 2
    assert await names(created_at__lte="2000-01-01T00:00:00") == []
    assert len(await names(created_at__gte="2000-01-01T00:00:00Z")) == 3


async def test_bad_filters_are_422_with_reasons(client: AsyncClient) -> None:
    response = await client.get("/widgets", params={
        "colour__in": "red", "price_cents": "cheap", "status__like": "x",
        "price_cents__contains": 1})
    assert response.status_code == 422
    problems = fields(response)
    assert set(problems) == {"colour__in", "price_cents", "status__like", "price_cents__contains"}
    assert problems["colour__in"]["code"] == "unknown_filter"
    assert "allowed:" in problems["colour__in"]["reason"]
    assert problems["price_cents"]["code"] == "invalid_value"
    assert problems["status__like"]["code"] == "unknown_operator"
    assert all(p["location"] == "query" for p in problems.values())
    # not filterable although a column: said, rather than silently listing everything
    note = await client.get("/widgets", params={"note": "x"})
    assert note.status_code == 422 and fields(note)["note"]["code"] == "unknown_filter"


async def test_query_parameters_not_about_the_resource_are_ignored(client: AsyncClient) -> None:
    await make(client, status="active")
    await make(client, status="draft")
    response = await client.get("/widgets", params={
        "utm_source": "newsletter", "colour": "red", "_": "1700000000", "status": "active"})
    assert response.status_code == 200, response.text
    assert [w["status"] for w in response.json()["data"]] == ["active"]
    assert (await client.get("/widgets?utm_source=x")).json()["meta"]["total"] == 2


async def test_ordering(client: AsyncClient) -> None:
    for name, price in (("b", 300), ("a", 100), ("c", 200), ("a", 50)):
        await make(client, name=name, price_cents=price)

    async def order(sort: str) -> list[tuple[str, int]]:
        response = await client.get("/widgets", params={"sort": sort})
        assert response.status_code == 200, response.text
        return [(w["name"], w["price_cents"]) for w in response.json()["data"]]

    assert await order("price_cents") == [("a", 50), ("a", 100), ("c", 200), ("b", 300)]
    assert await order("-price_cents") == [("b", 300), ("c", 200), ("a", 100), ("a", 50)]
    assert await order("name,-price_cents") == [("a", 100), ("a", 50), ("b", 300), ("c", 200)]
    newest_first = [("a", 50), ("c", 200), ("a", 100), ("b", 300)]
    assert await order("-created_at") == newest_first
    assert await order("") == newest_first  # the repository's default_sort
    bad = await client.get("/widgets", params={"sort": "note"})
    assert bad.status_code == 422
    assert fields(bad)["sort"]["code"] == "invalid_sort"


# --- soft delete, restore, purge, permissions -------------------------------------------------


async def test_soft_delete_hides_and_restore_shows(
    client: AsyncClient, database: Database
) -> None:
    keep = await make(client)
    gone = await make(client)

    deleted = await client.delete(f"/widgets/{gone['id']}")
    assert deleted.status_code == 200
    assert deleted.json()["message"] == "Widget deleted"
    assert deleted.json()["data"]["deleted_at"] is not None

    assert (await client.get(f"/widgets/{gone['id']}")).status_code == 404
    listing = (await client.get("/widgets")).json()
    assert [w["id"] for w in listing["data"]] == [keep["id"]]
    assert listing["meta"]["total"] == 1
    assert (await client.delete(f"/widgets/{gone['id']}")).status_code == 404
    assert await widget_count(database) == 2  # still stored

    trash = await client.get("/widgets/deleted", headers=ADMIN)
    assert trash.status_code == 200
    assert [w["id"] for w in trash.json()["data"]] == [gone["id"]]

    restored = await client.post(f"/widgets/{gone['id']}/restore", headers=ADMIN)
    assert restored.status_code == 200
    assert restored.json()["message"] == "Widget restored"
    assert restored.json()["data"]["deleted_at"] is None
    assert (await client.get(f"/widgets/{gone['id']}")).status_code == 200
    assert (await client.get("/widgets")).json()["meta"]["total"] == 2

    events = [r.event_type for r in await outbox_rows(database)]
    assert events == ["widget.created", "widget.created", "widget.deleted"]


async def test_permissions_deny_with_403(client: AsyncClient, database: Database) -> None:
    widget = await make(client)
    await client.delete(f"/widgets/{widget['id']}")

    for response in (
        await client.post(f"/widgets/{widget['id']}/restore"),
        await client.get("/widgets/deleted"),
        await client.delete(f"/widgets/{widget['id']}/purge", headers={"x-role": "user"}),
    ):
        assert response.status_code == 403
        assert error(response) == {"code": "forbidden", "message": "admins only", "fields": []}
    assert (await client.get("/widgets/deleted", headers=ADMIN)).json()["meta"]["total"] == 1


async def test_purge_deletes_for_good(client: AsyncClient, database: Database) -> None:
    widget = await make(client)
    response = await client.delete(f"/widgets/{widget['id']}/purge", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {"data": None, "message": "Widget permanently deleted"}
    assert await widget_count(database) == 0
    assert (await client.post(f"/widgets/{widget['id']}/restore", headers=ADMIN)).status_code \
        == 404


# --- failures roll back; nothing leaks ---------------------------------------------------------


async def test_unexpected_error_is_a_bare_500(database: Database) -> None:
    app = create_app(database)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret connection string postgres://admin:pw@db")

    transport = ASGITransport(app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/boom")
    assert response.status_code == 500
    assert error(response) == {"code": "internal_error", "message": "Internal server error",
                               "fields": []}
    assert "secret" not in response.text


async def test_without_an_outbox_the_create_fails_and_rolls_back(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(delete(Widget))
    app = create_app(database, outbox=None)  # misconfigured: WidgetService publishes events
    async with AsyncClient(transport=ASGITransport(app), base_url="http://test") as http:
        response = await http.post("/widgets", json={"name": "w", "sku": sku(),
                                                     "price_cents": 1})
    assert response.status_code == 500
    assert error(response)["code"] == "internal_error"
    assert await widget_count(database) == 0  # the insert was flushed, then rolled back


async def test_event_and_state_commit_or_roll_back_together(
    database: Database, writer: OutboxWriter
) -> None:
    async with database.transaction() as session:
        await session.execute(delete(Widget))
        await session.execute(delete(outbox))

    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await WidgetService(session, writer).create(
                WidgetCreate(name="w", sku=sku(), price_cents=1))
            assert len((await session.execute(select(outbox))).all()) == 1
            raise RuntimeError("crash before commit")
    assert await widget_count(database) == 0
    assert await outbox_rows(database) == []

    async with database.transaction() as session:
        created = await WidgetService(session, writer).create(
            WidgetCreate(name="w", sku=sku(), price_cents=1))
    assert await widget_count(database) == 1
    assert [r.key for r in await outbox_rows(database)] == [str(created.id)]


async def test_bulk_create_is_all_or_nothing(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(delete(Widget))
    rows = [{"name": f"w{i}", "sku": sku(), "price_cents": i} for i in range(3)]

    async with database.transaction() as session:
        repository = WidgetRepository(session)
        made = await repository.bulk_create(rows)
        assert [w.name for w in made] == ["w0", "w1", "w2"] and all(w.id for w in made)
        assert await repository.exists(sku=rows[1]["sku"])
        assert not await repository.exists(sku="NOPE-1")

    clash = [{"name": "x", "sku": "BULK-1", "price_cents": 1},
             {"name": "y", "sku": "BULK-1", "price_cents": 2}]
    with pytest.raises(ConflictError):
        async with database.transaction() as session:
            await WidgetRepository(session).bulk_create(clash)
    assert await widget_count(database) == 3


async def test_publish_event_needs_an_outbox_and_a_topic(database: Database) -> None:
    async with database.session() as session:
        event = WidgetCreated.model_validate({
            "aggregate_id": "1", "data": {"widget_id": "1", "sku": "S", "price_cents": 1}})
        with pytest.raises(ConfigurationError, match="no outbox"):
            await WidgetService(session).publish_event(event)

        class Topicless(WidgetService):
            events_topic = None

        with pytest.raises(ConfigurationError, match="no topic"):
            await Topicless(session, writer_stub()).publish_event(event)


def writer_stub() -> Any:
    class Stub:
        async def add(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("must not be reached")

    return Stub()


async def test_a_database_that_is_down_is_a_503_to_retry_not_a_500() -> None:
    """asyncpg against a port where no server listens: the same failure as PostgreSQL down."""
    down = Database(f"postgresql+asyncpg://app:pw@127.0.0.1:{free_port()}/app")
    try:
        transport = ASGITransport(create_app(down), raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            listed = await http.get("/widgets")
            created = await http.post("/widgets", json={"name": "w", "sku": sku(),
                                                        "price_cents": 1})
    finally:
        await down.dispose()
    for response in (listed, created):
        assert response.status_code == 503, response.text
        assert error(response)["code"] == "database_unavailable"
        assert response.headers["retry-after"] == "5"
        assert "app:pw" not in response.text
