"""Pure logic of core.bases: pagination, filters and ordering, error mapping, permissions,
router configuration. No database; the HTTP cases run in-process."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import BaseModel
from sqlalchemy import String
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.bases import (
    BaseRepository,
    BaseRouter,
    BaseService,
    ConfigurationError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PageRequest,
    Permissions,
    UnauthorizedError,
    ValidationError,
    allow_if,
    install_exception_handlers,
)
from core.bases.errors import from_integrity_error
from core.bases.filters import order_clauses, parse_filters, where_clauses
from core.bases.pagination import Page
from core.db.errors import constraint_violation, refused_value
from core.db.models import ServiceBase, TimestampMixin, UUIDPrimaryKeyMixin


class Base(ServiceBase, DeclarativeBase):
    pass


class Thing(UUIDPrimaryKeyMixin, TimestampMixin, Base):
    """Not soft-deletable."""

    __tablename__ = "things"
    name: Mapped[str] = mapped_column(String(50))
    size: Mapped[int]


class ThingIn(BaseModel):
    name: str
    size: int


class ThingPatch(BaseModel):
    name: str | None = None


class ThingOut(BaseModel):
    id: uuid.UUID
    name: str


class ThingRepository(BaseRepository[Thing]):
    model = Thing
    filter_fields = frozenset({"name", "size", "created_at"})
    sort_fields = frozenset({"name", "size"})


class ThingService(BaseService[Thing, ThingIn, ThingPatch]):
    repository_class = ThingRepository


def sql(clause: Any) -> str:
    return str(clause.compile(dialect=postgresql.dialect(),
                              compile_kwargs={"literal_binds": True}))


# --- pagination -------------------------------------------------------------------------------


def test_page_request_and_page_math() -> None:
    assert PageRequest.of(3, 10) == PageRequest(offset=20, limit=10)
    assert PageRequest(offset=25, limit=10).page == 3
    page = Page(items=[1, 2], total=21, request=PageRequest.of(3, 10))
    assert (page.page, page.size, page.pages) == (3, 10, 3)
    assert Page([], 0, PageRequest()).pages == 0
    assert page.map(str).items == ["1", "2"]
    for bad in (lambda: PageRequest.of(0, 10), lambda: PageRequest(-1, 10),
                lambda: PageRequest(0, 0)):
        with pytest.raises(ValueError):
            bad()


# --- filters and ordering ---------------------------------------------------------------------


def test_parse_filters_splits_operators_and_merges_repeats() -> None:
    parsed = parse_filters([("name", "a"), ("size__gte", "3"), ("name", "b")])
    assert [(f.field, f.op, f.value) for f in parsed] == [
        ("name", "in", ["a", "b"]), ("size", "gte", "3")]
    with pytest.raises(ValidationError):
        parse_filters([("size__gt", "1"), ("size__gt", "2")])


def test_where_clauses_convert_values_to_the_column_type() -> None:
    clauses = where_clauses(Thing, parse_filters({
        "size__gte": "3", "name__contains": "50%", "size__in": "1,2",
        "created_at__lt": "2024-01-02T00:00:00"}), ThingRepository.filter_fields)
    rendered = [sql(c) for c in clauses]
    assert rendered[0] == "things.size >= 3"
    assert "ILIKE '%%' || '50/%%' || '%%' ESCAPE '/'" in rendered[1].replace("%%%", "%%")
    assert rendered[2] == "things.size IN (1, 2)"
    assert "2024-01-02 00:00:00+00:00" in rendered[3]  # naive input is read as UTC


def test_where_clauses_report_every_refused_filter() -> None:
    with pytest.raises(ValidationError) as refused:
        where_clauses(Thing, parse_filters({"size": "big", "colour": "red", "name__near": "x",
                                            "size__startswith": "1"}),
                      ThingRepository.filter_fields)
    problems = {f.field: f.code for f in refused.value.fields}
    assert problems == {"size": "invalid_value", "colour": "unknown_filter",
                        "name__near": "unknown_operator", "size__startswith": "invalid_operator"}


def test_order_clauses_append_the_primary_key_and_refuse_unknown_fields() -> None:
    terms = [sql(t) for t in order_clauses(Thing, "-size, name", ThingRepository.sort_fields)]
    assert terms == ["things.size DESC", "things.name ASC", "things.id ASC"]
    assert [sql(t) for t in order_clauses(Thing, None, {"size"}, default=("size",))] == [
        "things.size ASC", "things.id ASC"]
    for bad in ("created_at", "size,-size"):
        with pytest.raises(ValidationError):
            order_clauses(Thing, bad, ThingRepository.sort_fields)


def test_a_repository_must_name_real_columns() -> None:
    with pytest.raises(ConfigurationError, match="colour"):
        class Wrong(BaseRepository[Thing]):
            model = Thing
            filter_fields = frozenset({"colour"})


# --- constraint violations --------------------------------------------------------------------


def integrity(orig: BaseException) -> IntegrityError:
    return IntegrityError("INSERT ...", {}, orig)


def test_sqlite_constraint_messages_are_understood() -> None:
    unique = constraint_violation(integrity(sqlite3.IntegrityError(
        "UNIQUE constraint failed: things.name, things.size")))
    assert (unique.kind, unique.columns) == ("unique", ("name", "size"))
    assert constraint_violation(integrity(sqlite3.IntegrityError(
        "NOT NULL constraint failed: things.name"))).kind == "not_null"
    assert constraint_violation(integrity(sqlite3.IntegrityError(
        "FOREIGN KEY constraint failed"))).kind == "foreign_key"
    assert constraint_violation(integrity(sqlite3.IntegrityError("odd"))).kind == "other"


def test_postgres_sqlstate_and_detail_are_understood() -> None:
    class AsyncpgError(Exception):
        sqlstate = "23505"
        detail = "Key (name, size)=(a, 1) already exists."
        constraint_name = "uq_things_name"
        column_name = None

    class AdaptedError(Exception):
        sqlstate = "23505"

    orig = AdaptedError("duplicate key")
    orig.__cause__ = AsyncpgError()
    violation = constraint_violation(integrity(orig))
    assert violation.kind == "unique"
    assert violation.columns == ("name", "size")
    assert violation.constraint == "uq_things_name"


def test_values_the_database_refuses_are_told_from_other_database_errors() -> None:
    class AsyncpgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    def dbapi(sqlstate: str) -> DBAPIError:
        orig = Exception("adapted")
        orig.__cause__ = AsyncpgError(sqlstate)
        return DBAPIError("INSERT ...", {}, orig)

    assert refused_value(dbapi("22021"))  # NUL character in text
    assert refused_value(dbapi("22001"))  # too long for varchar(n)
    assert not refused_value(dbapi("42P01"))  # no such table: the service's fault
    assert refused_value(DataError("SELECT ...", {}, Exception("numeric value out of range")))
    assert not refused_value(DBAPIError("SELECT ...", {}, sqlite3.OperationalError("locked")))


def test_integrity_errors_become_client_errors() -> None:
    conflict = from_integrity_error(
        integrity(sqlite3.IntegrityError("UNIQUE constraint failed: things.name")), "thing")
    assert isinstance(conflict, ConflictError)
    assert conflict.message == "A thing with this name already exists"
    assert [(f.field, f.code) for f in conflict.fields] == [("name", "unique")]
    assert isinstance(from_integrity_error(integrity(sqlite3.IntegrityError(
        "NOT NULL constraint failed: things.name"))), ValidationError)


# --- HTTP mapping -----------------------------------------------------------------------------


async def test_each_error_maps_to_its_status_and_one_body_shape() -> None:
    app = FastAPI()
    install_exception_handlers(app)
    raised: dict[str, Exception] = {
        "validation": ValidationError.for_field("name", "taken"),
        "conflict": ConflictError("busy"),
        "missing": NotFoundError("no thing 1"),
        "forbidden": ForbiddenError(),
        "anonymous": UnauthorizedError(),
        "wiring": ConfigurationError("DATABASE_URL=postgres://secret"),
        "db-down": ConnectionRefusedError(111, "Connect call failed ('10.0.0.5', 5432)"),
        "db-locked": OperationalError("UPDATE ...", {}, sqlite3.OperationalError(
            "database is locked")),
        "db-pool": PoolTimeoutError("QueuePool limit of size 5 overflow 10 reached"),
        "db-bug": OperationalError("SELECT ...", {}, sqlite3.OperationalError(
            "no such table: things")),
        "not-db": OSError(28, "No space left on device"),
    }

    @app.get("/{what}")
    async def fail(what: str) -> None:
        raise raised[what]

    @app.get("/typed/{n}")
    async def typed(n: int) -> int:
        return n

    transport = ASGITransport(app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://t") as http:
        answers = {what: await http.get(f"/{what}") for what in raised}
        bad_path = await http.get("/typed/x")

    assert {w: r.status_code for w, r in answers.items()} == {
        "validation": 422, "conflict": 409, "missing": 404, "forbidden": 403,
        "anonymous": 401, "wiring": 500, "db-down": 503, "db-locked": 503, "db-pool": 503,
        "db-bug": 500, "not-db": 500}
    for away in ("db-down", "db-locked", "db-pool"):
        assert answers[away].json()["error"]["code"] == "database_unavailable"
        assert answers[away].headers["retry-after"] == "5"
        assert "10.0.0.5" not in answers[away].text
    assert answers["validation"].json() == {"error": {
        "code": "validation_error", "message": "name: taken",
        "fields": [{"field": "name", "reason": "taken", "code": "invalid",
                    "location": "body"}]}}
    assert answers["missing"].json()["error"]["message"] == "no thing 1"
    assert answers["anonymous"].headers["www-authenticate"] == "Bearer"
    assert answers["wiring"].json()["error"] == {
        "code": "internal_error", "message": "Internal server error", "fields": []}
    assert bad_path.status_code == 422
    [field] = bad_path.json()["error"]["fields"]
    assert (field["field"], field["location"], field["code"]) == ("n", "path", "int_parsing")


# --- permissions and router configuration -------------------------------------------------------


async def test_permissions_per_action() -> None:
    def admin(_: Any) -> bool:
        return False

    guard = allow_if(admin)
    perms = Permissions(restore=[guard])
    assert perms.for_action("read_deleted") == [guard]
    assert perms.for_action("read") == []
    assert Permissions(restore=[guard], read_deleted=[]).for_action("read_deleted") == []
    assert all(Permissions.every(guard).for_action(a) == [guard]
               for a in ("create", "read", "update", "delete", "restore", "hard_delete"))

    async def async_yes(_: Any) -> bool:
        return True

    await allow_if(async_yes)(None)  # type: ignore[arg-type]
    with pytest.raises(ForbiddenError, match="nope"):
        await allow_if(admin, "nope")(None)  # type: ignore[arg-type]


def test_router_mounts_soft_delete_routes_only_for_soft_deletable_models() -> None:
    router = BaseRouter(ThingService, prefix="/things", create_schema=ThingIn,
                        update_schema=ThingPatch, public_schema=ThingOut, hard_delete=True)
    app = FastAPI()
    app.include_router(router)
    routes = {(m, p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert routes == {("post", "/things"), ("get", "/things"), ("get", "/things/{id}"),
                      ("patch", "/things/{id}"), ("delete", "/things/{id}")}
    assert not router.soft_delete and router.label == "Thing"


def test_router_mounts_only_the_routes_it_is_given() -> None:
    options: dict[str, Any] = {"prefix": "/things", "create_schema": ThingIn,
                               "update_schema": ThingPatch, "public_schema": ThingOut}
    app = FastAPI()
    app.include_router(BaseRouter(ThingService, routes={"list", "read"}, **options))
    routes = {(m, p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert routes == {("get", "/things"), ("get", "/things/{id}")}
    with pytest.raises(ConfigurationError, match="no routes named"):
        BaseRouter(ThingService, routes={"list", "search"}, **options)  # type: ignore[arg-type]


def test_router_configuration_is_checked() -> None:
    options: dict[str, Any] = {"prefix": "/things", "create_schema": ThingIn,
                               "update_schema": ThingPatch, "public_schema": ThingOut}
    with pytest.raises(ConfigurationError):
        BaseRouter(ThingService, default_page_size=500, **options)
    with pytest.raises(ConfigurationError, match="soft_delete"):
        BaseRouter(lambda session, outbox: ThingService(session), **options)
    BaseRouter(lambda session, outbox: ThingService(session), soft_delete=False, **options)
