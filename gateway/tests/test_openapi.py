"""The merged OpenAPI document: the real reference services' documents through a route table
like the gateway's, and small hand-made ones for the edge cases."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest
from schemathesis.core.result import Ok
from schemathesis.openapi import from_dict

from gateway.openapi import gateway_spec, merge_openapi
from gateway.openapi.refs import component_refs, make_ref, parse_ref, rewrite_refs
from gateway.routes.checks import parse_rate_limit
from gateway.tests.openapi_support import (
    Json,
    Route,
    dangling_refs,
    op,
    operations,
    reference_specs,
    spec,
    table,
)

BEARER: list[Json] = [{"bearerAuth": []}]
PUBLIC: list[Json] = []

# The public API of the reference services, as the gateway's route table sends it.
REFERENCE = table(
    Route("auth-register", "/api/auth/register", "auth", "/auth/register",
          frozenset({"POST"}), public=True),
    Route("auth-login", "/api/auth/login", "auth", "/auth/login", frozenset({"POST"}),
          public=True),
    Route("auth-refresh", "/api/auth/refresh", "auth", "/auth/refresh", frozenset({"POST"}),
          public=True),
    Route("auth", "/api/auth", "auth", "/auth"),
    Route("oauth-token", "/api/oauth/token", "auth", "/oauth/token", frozenset({"POST"}),
          public=True),
    Route("jwks", "/.well-known/jwks.json", "auth", "", frozenset({"GET"}), public=True),
    Route("users", "/api/users", "user", "/users"),
    Route("drivers-nearby", "/api/drivers/nearby", "driver", "/drivers/nearby",
          frozenset({"GET"}), permissions=frozenset({"drivers:read"})),
    Route("drivers", "/api/drivers", "driver", "/drivers"),
    Route("notifications", "/api/notifications", "notification", "/notifications"),
    Route("orders", "/api/orders", "order", "/orders"),
    Route("sagas", "/api/sagas", "order", "/sagas", permissions=frozenset({"sagas:read"})),
    Route("monolith-reports", "/api/reports", "legacy", "/reports"),
)


@pytest.fixture(scope="module")
def real_specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Json]:
    return reference_specs(tmp_path_factory.mktemp("openapi"))


@pytest.fixture(scope="module")
def merged(real_specs: dict[str, Json]) -> Json:
    return merge_openapi(REFERENCE, real_specs, title="Platform API", version="9.9.9")


# --- the real services -------------------------------------------------------------------------

def test_real_paths_appear_at_the_gateway_paths(merged: Json) -> None:
    paths = merged["paths"]
    assert set(paths["/api/auth/register"]) == {"post"}
    assert set(paths["/api/auth/login"]) == {"post"}
    assert set(paths["/api/users/me"]) == {"get", "patch"}
    assert "put" in paths["/api/drivers/{driver_id}/status"]
    assert "put" in paths["/api/drivers/{driver_id}/location"]
    assert "get" in paths["/api/drivers/nearby"]
    assert "get" in paths["/api/notifications"]
    assert "post" in paths["/api/auth/logout"]
    assert "get" in paths["/.well-known/jwks.json"]
    assert "post" in paths["/api/oauth/token"]
    # the gateway's own paths, and nothing at a service's own path or health
    assert set(paths["/health/live"]) == {"get"} and set(paths["/health/ready"]) == {"get"}
    assert not [p for p in paths if p.startswith(("/auth/", "/users", "/drivers", "/oauth"))]
    assert not [p for p in paths if p.startswith("/api/") and "/health/" in p]
    assert merged["openapi"] == "3.1.0"
    assert merged["info"]["title"] == "Platform API" and merged["info"]["version"] == "9.9.9"
    assert merged["info"]["x-services"] == {s: "0.1.0" for s in
                                            ("auth", "user", "driver", "notification", "order")}
    assert "x-unavailable-services" not in merged["info"]


def test_every_real_operation_is_there_once(real_specs: dict[str, Json],
                                            merged: Json) -> None:
    """Every operation of every service outside /health is reachable through the table,
    so all of them appear, each exactly once."""
    expected = sum(1 for s in real_specs.values() for p, _, _ in operations(s)
                   if not p.startswith("/health/"))
    routed = [(p, m) for p, m, _ in operations(merged) if not p.startswith("/health/")]
    assert len(routed) == expected == len(set(routed))


def test_real_security_is_the_gateways(merged: Json) -> None:
    paths = merged["paths"]
    for public in (paths["/api/auth/register"]["post"], paths["/api/auth/login"]["post"],
                   paths["/.well-known/jwks.json"]["get"], paths["/health/live"]["get"]):
        assert public["security"] == PUBLIC
    for protected in (paths["/api/users/me"]["get"], paths["/api/auth/me"]["get"],
                      paths["/api/drivers"]["post"], paths["/api/notifications"]["get"]):
        assert protected["security"] == BEARER
    assert merged["components"]["securitySchemes"] == {"bearerAuth": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "An access token from the auth service (POST /api/auth/login)"}}
    assert "HTTPBearer" not in json.dumps(merged)
    nearby = paths["/api/drivers/nearby"]["get"]
    assert nearby["x-required-permissions"] == ["drivers:read"]
    assert "`drivers:read`" in nearby["description"]


def test_real_document_is_valid_openapi(merged: Json) -> None:
    """Checked with schemathesis's loader and its validation against the OpenAPI 3.1
    meta-schema (openapi_spec_validator is not installed), plus our own walk for refs."""
    assert dangling_refs(merged) == []
    schema = from_dict(json.loads(json.dumps(merged)))
    schema.validate()
    results = list(schema.get_all_operations())
    assert len(results) == sum(1 for _ in operations(merged))
    assert all(isinstance(r, Ok) for r in results)  # every operation loads


def test_real_operation_ids_tags_and_components(merged: Json) -> None:
    ops = list(operations(merged))
    ids = Counter(o["operationId"] for _, _, o in ops)
    assert ids and max(ids.values()) == 1
    assert ids["register_auth_register_post"] == 1  # unique ones keep their name
    service_of = {"/api/auth": "auth", "/api/oauth": "auth", "/.well-known": "auth",
                  "/api/users": "user", "/api/drivers": "driver",
                  "/api/notifications": "notification", "/api/orders": "order",
                  "/api/sagas": "order", "/health": "gateway"}
    for path, _, o in ops:
        service = next(s for p, s in service_of.items() if path.startswith(p))
        assert o["tags"][0] == service
    # the services' own tags are kept after theirs
    assert merged["paths"]["/api/auth/roles"]["get"]["tags"] == ["auth", "rbac"]
    assert merged["paths"]["/api/users/me"]["get"]["tags"] == ["user", "profiles"]
    assert merged["paths"]["/health/live"]["get"]["tags"] == ["gateway", "health"]
    tags = [t["name"] for t in merged["tags"]]
    assert tags[:5] == ["gateway", "auth", "user", "driver", "notification"]
    schemas = merged["components"]["schemas"]
    # the same shapes in every service are kept once, under their own names
    assert {"ErrorResponse", "PageMeta", "Readiness", "ProfilePublic", "DriverPublic"} <= set(
        schemas)
    assert not [name for name in schemas if "__" in name]


def test_the_inputs_are_not_changed(real_specs: dict[str, Json]) -> None:
    before = copy.deepcopy(real_specs)
    doc = merge_openapi(REFERENCE, real_specs, title="t", version="1")
    assert real_specs == before
    doc["components"]["schemas"]["ErrorResponse"]["title"] = "changed"
    assert real_specs == before


# --- hand-made specs: mapping ------------------------------------------------------------------

def test_a_rewrite_reroots_and_an_empty_rewrite_keeps_the_path() -> None:
    specs = {"a": spec("a", {"/v1/items/{id}": {"get": op("item")},
                             "/v1": {"get": op("root")},
                             "/v1x": {"get": op("beside")},
                             "/other": {"get": op("other")}}),
             "b": spec("b", {"/b/things": {"get": op("things")}, "/c": {"get": op("c")}})}
    doc = merge_openapi(table(Route("a", "/api/a", "a", "/v1"),
                              Route("b", "/b", "b", "")), specs, title="t", version="1")
    assert set(doc["paths"]) == {"/api/a/items/{id}", "/api/a", "/b/things",
                                 "/health/live", "/health/ready"}


def test_an_unknown_service_and_the_legacy_upstream_are_left_out() -> None:
    specs = {"legacy": spec("legacy", {"/api/old": {"get": op("old")}})}
    doc = merge_openapi(table(Route("old", "/api/old", "legacy"),
                              Route("gone", "/api/gone", "gone")), specs, title="t",
                        version="1", unavailable=["gone"])
    assert set(doc["paths"]) == {"/health/live", "/health/ready"}
    assert doc["info"]["x-unavailable-services"] == ["gone"]
    assert "gone" in doc["info"]["description"]


def test_only_the_methods_the_route_allows() -> None:
    specs = {"a": spec("a", {"/a/x": {"get": op("get_x", schema="Read"),
                                      "post": op("post_x", schema="Write"),
                                      "parameters": [{"name": "q", "in": "query"}]},
                             "/a/y": {"get": op("get_y")}},
                       {"Read": {"type": "object"}, "Write": {"type": "string"}})}
    doc = merge_openapi(table(Route("a", "/api/a", "a", "/a", frozenset({"POST"}))), specs,
                        title="t", version="1")
    post = doc["paths"]["/api/a/x"]["post"]
    post["responses"] = {k: v for k, v in post["responses"].items() if k == "200"}  # below
    assert doc["paths"]["/api/a/x"] == {
        "parameters": [{"name": "q", "in": "query"}],
        "post": {**op("post_x", schema="Write"), "tags": ["a"], "security": BEARER}}
    assert "/api/a/y" not in doc["paths"]  # no method left: no path
    assert "Read" not in doc["components"]["schemas"]  # used only by what was dropped


def test_the_longest_route_owns_a_path() -> None:
    """/api/auth (protected, every method) and /api/auth/login (public, POST) both reach
    /auth/login: it appears once, as the longer route lets it through."""
    specs = {"auth": spec("auth", {"/auth/login": {"get": op("login_form"),
                                                    "post": op("login")},
                                   "/auth/me": {"get": op("me")}})}
    doc = merge_openapi(table(Route("auth", "/api/auth", "auth", "/auth"),
                              Route("login", "/api/auth/login", "auth", "/auth/login",
                                    frozenset({"POST"}), public=True),
                              Route("short", "/login", "auth", "/auth/login")),
                        specs, title="t", version="1")
    # GET /api/auth/login is answered 405 by the gateway (its route is POST only)
    assert set(doc["paths"]["/api/auth/login"]) == {"post"}
    assert doc["paths"]["/api/auth/login"]["post"]["security"] == PUBLIC
    assert doc["paths"]["/api/auth/me"]["get"]["security"] == BEARER
    # POST reaches /auth/login through /login too, but appears once, under the longest route;
    # GET is reached only through /login
    assert set(doc["paths"]["/login"]) == {"get"}
    assert Counter(o["operationId"] for _, _, o in operations(doc))["login"] == 1


def test_a_route_that_shadows_a_service_path_hides_it() -> None:
    """/api/a/admin goes to another service: service a's /a/admin is not reachable."""
    specs = {"a": spec("a", {"/a/admin": {"get": op("a_admin")}, "/a/x": {"get": op("x")}}),
             "b": spec("b", {"/admin": {"get": op("b_admin")}})}
    doc = merge_openapi(table(Route("b", "/api/a/admin", "b", "/admin"),
                              Route("a", "/api/a", "a", "/a")),
                        specs, title="t", version="1")
    assert {o["operationId"] for _, _, o in operations(doc)} == {
        "b_admin", "x", "live_health_live_get", "ready_health_ready_get"}
    assert doc["paths"]["/api/a/admin"]["get"]["operationId"] == "b_admin"
    assert doc["paths"]["/api/a/admin"]["get"]["tags"] == ["b"]
    assert doc["paths"]["/api/a/x"]["get"]["operationId"] == "x"


def test_the_gateways_own_paths_win() -> None:
    specs = {"a": spec("a", {"/health/live": {"get": op("a_live")}})}
    doc = merge_openapi(table(Route("root", "/", "a", "")), specs, title="t", version="1")
    assert doc["paths"]["/health/live"]["get"]["tags"] == ["gateway", "health"]
    own = {"openapi": "3.1.0", "info": {"title": "g", "version": ""},
           "paths": {"/ping": {"get": op("ping")}}}
    doc = merge_openapi(table(), {}, title="t", version="1", own=own)
    assert set(doc["paths"]) == {"/ping"}
    assert set(gateway_spec()["paths"]) == {"/health/live", "/health/ready"}


# --- hand-made specs: components, ids, security ---------------------------------------------------

def test_differing_components_are_renamed_and_identical_ones_kept_once() -> None:
    problem = {"type": "object", "properties": {"detail": {"type": "string"}}}
    specs = {
        "a": spec("a", {"/a": {"get": op("list", schema="Page")}},
                  {"Page": {"type": "object", "properties": {
                      "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                      "error": {"$ref": "#/components/schemas/Problem"}}},
                   "Item": {"type": "string"}, "Problem": problem}),
        "b": spec("b", {"/b": {"get": op("list", schema="Page")}},
                  {"Page": {"type": "object", "properties": {
                      "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                      "error": {"$ref": "#/components/schemas/Problem"}}},
                   "Item": {"type": "integer"}, "Problem": problem}),
    }
    doc = merge_openapi(table(Route("a", "/api/a", "a", "/a"), Route("b", "/api/b", "b", "/b")),
                        specs, title="t", version="1")
    schemas = doc["components"]["schemas"]
    # Item differs; Page is the same text but means different things through Item
    assert {"a__Item", "b__Item", "a__Page", "b__Page", "Problem"} <= set(schemas)
    assert not {"Item", "Page", "a__Problem", "b__Problem"} & set(schemas)
    assert schemas["b__Page"]["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/b__Item"}
    assert schemas["b__Page"]["properties"]["error"] == {"$ref": "#/components/schemas/Problem"}
    response = doc["paths"]["/api/b"]["get"]["responses"]["200"]
    assert response["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/b__Page"}
    assert dangling_refs(doc) == []
    assert {o["operationId"] for _, _, o in operations(doc)} >= {"a__list", "b__list"}
    from_dict(doc).validate()


def test_components_of_every_kind_and_discriminators_are_rewritten() -> None:
    a = spec("a", {"/a": {"post": {
        "operationId": "a", "requestBody": {"$ref": "#/components/requestBodies/In"},
        "parameters": [{"$ref": "#/components/parameters/Q"}],
        "responses": {"200": {"$ref": "#/components/responses/Out"}}}}},
        {"Cat": {"type": "object"}, "Dog": {"type": "object"},
         "Pet": {"oneOf": [{"$ref": "#/components/schemas/Cat"},
                           {"$ref": "#/components/schemas/Dog"}],
                 "discriminator": {"propertyName": "kind", "mapping": {
                     "cat": "#/components/schemas/Cat", "dog": "#/components/schemas/Dog"}}}})
    a["components"].update(
        requestBodies={"In": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Pet"}}}}},
        parameters={"Q": {"name": "q", "in": "query", "schema": {"type": "string"}}},
        responses={"Out": {"description": "a pet", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Pet"}}}}})
    b = copy.deepcopy(a)
    b["paths"] = {"/b": b["paths"].pop("/a")}
    b["components"]["schemas"]["Dog"] = {"type": "object", "title": "a b dog"}
    b["components"]["parameters"]["Q"]["schema"] = {"type": "integer"}
    doc = merge_openapi(table(Route("a", "/api/a", "a", "/a"), Route("b", "/api/b", "b", "/b")),
                        {"a": a, "b": b}, title="t", version="1")
    comps = doc["components"]
    assert set(comps["schemas"]) - set(gateway_spec()["components"]["schemas"]) == {
        "Cat", "a__Dog", "b__Dog", "a__Pet", "b__Pet", "GatewayError"}
    assert comps["schemas"]["b__Pet"]["discriminator"]["mapping"] == {
        "cat": "#/components/schemas/Cat", "dog": "#/components/schemas/b__Dog"}
    assert set(comps["parameters"]) == {"a__Q", "b__Q"}
    assert set(comps["requestBodies"]) == {"a__In", "b__In"}
    assert set(comps["responses"]) == {"a__Out", "b__Out"}
    assert doc["paths"]["/api/b"]["post"]["parameters"] == [
        {"$ref": "#/components/parameters/b__Q"}]
    assert dangling_refs(doc) == []
    from_dict(doc).validate()


def test_the_checker_finds_dangling_refs() -> None:
    """The walk the tests rely on does see what it looks for."""
    doc = spec("x", {"/x": {"get": {**op("x", schema="Missing"), "security": [{"nope": []}]}}},
               {"P": {"discriminator": {"propertyName": "k",
                                        "mapping": {"k": "#/components/schemas/Gone"}}}})
    assert dangling_refs(doc) == ["#/paths//x/get/responses/200/content/application/json/schema:"
                                  " #/components/schemas/Missing",
                                  "#/paths//x/get: security scheme nope",
                                  "#/components/schemas/P/discriminator:"
                                  " #/components/schemas/Gone"]


def test_refs_escape_and_leave_foreign_refs_alone() -> None:
    key = ("schemas", "a/b~c")
    assert make_ref(key) == "#/components/schemas/a~1b~0c" and parse_ref(make_ref(key)) == key
    for foreign in ("other.json#/X", "#/paths/~1a", "#/components/schemas", 3):
        assert parse_ref(foreign) is None
    value = {"$ref": make_ref(key), "properties": {"mapping": {"$ref": "other.json"}},
             "x": [{"$ref": "#/components/schemas/Kept"}]}
    assert list(component_refs(value)) == [key, ("schemas", "Kept")]
    assert rewrite_refs(value, {key: "new"}) == {
        "$ref": "#/components/schemas/new", "properties": {"mapping": {"$ref": "other.json"}},
        "x": [{"$ref": "#/components/schemas/Kept"}]}


def test_operation_ids_are_unique() -> None:
    specs = {"a": spec("a", {"/a/1": {"get": op("list")}, "/a/2": {"get": op("list")},
                             "/a/3": {"get": op("only_a")}}),
             "b": spec("b", {"/b": {"get": op("list")}, "/b/x": {"get": op("a__list")}})}
    doc = merge_openapi(table(Route("a", "/api/a", "a", "/a"), Route("b", "/api/b", "b", "/b")),
                        specs, title="t", version="1")
    ids = {p: o["operationId"] for p, _, o in operations(doc) if p.startswith("/api")}
    assert ids == {"/api/a/1": "a__list_2", "/api/a/2": "a__list_3", "/api/a/3": "only_a",
                   "/api/b": "b__list", "/api/b/x": "a__list"}


def test_a_public_route_to_an_operation_that_wants_a_token_shows_the_token() -> None:
    """The edge lets a public route through unchecked; when the service still checks a token
    there, the document says so, or "Try it out" could never work."""
    specs = {"a": spec("a", {"/a/open": {"get": op("open")},
                             "/a/logout": {"post": op("logout", security=[{"HTTPBearer": []}])},
                             "/a/maybe": {"get": op("maybe", security=[{}, {"HTTPBearer": []}])},
                             "/a/tagged": {"get": op("tagged", tags=("a", "mine"))}})}
    doc = merge_openapi(table(Route("a", "/api/a", "a", "/a", public=True)), specs, title="t",
                        version="1")
    security = {p: o["security"] for p, _, o in operations(doc)}
    assert security["/api/a/open"] == PUBLIC and security["/api/a/maybe"] == PUBLIC
    assert security["/api/a/logout"] == BEARER
    assert doc["paths"]["/api/a/tagged"]["get"]["tags"] == ["a", "mine"]
    assert "x-required-permissions" not in doc["paths"]["/api/a/open"]["get"]


def test_servers_of_a_service_are_dropped() -> None:
    """Calls go to the gateway, never to a service's own address."""
    specs = {"a": spec("a", {"/a": {"servers": [{"url": "http://a:8001"}],
                                    "get": {**op("x"), "servers": [{"url": "http://a"}]}}},
                       servers=[{"url": "http://a:8001"}])}
    doc = merge_openapi(table(Route("a", "/api/a", "a", "/a")), specs, title="t", version="1")
    assert "servers" not in json.dumps(doc)


def test_a_readable_document_fits_in_a_file(merged: Json, tmp_path: Path) -> None:
    """It serialises (JSON, no shared objects mangled) and round-trips."""
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(merged))
    assert json.loads(path.read_text()) == merged


def test_a_malformed_service_document_loses_its_bad_parts_only() -> None:
    """A service's broken document must not take the docs page down."""
    broken: Json = {"openapi": "3.1.0", "info": "nonsense", "tags": "oops",
                    "components": {"schemas": "nonsense"},
                    "paths": {"/a/x": {"get": "nonsense",
                                       "post": {**op("x", schema="Gone"), "tags": "oops"}},
                              "/a/y": "nonsense", "/a/z": {"get": {**op("z"), "tags": ["a", 7]}}}}
    doc = merge_openapi(table(Route("a", "/api/a", "a", "/a")), {"a": broken}, title="t",
                        version="1")
    assert set(doc["paths"]["/api/a/x"]) == {"post"}
    assert doc["paths"]["/api/a/x"]["post"]["tags"] == ["a"]
    assert doc["paths"]["/api/a/z"]["get"]["tags"] == ["a"]
    assert "/api/a/y" not in doc["paths"]
    # the service's own dangling reference stays its own bug, visibly
    assert dangling_refs(doc) == [
        "#/paths//api/a/x/post/responses/200/content/application/json/schema:"
        " #/components/schemas/Gone"]


# --- what the gateway answers itself -----------------------------------------------------------

ERROR = {"$ref": "#/components/schemas/GatewayError"}


def test_every_operation_declares_the_statuses_the_gateway_answers_with_its_error_body() -> None:
    specs = {"a": spec("a", {"/a/open": {"get": op("open")}, "/a/shut": {"post": op("shut")}})}
    doc = merge_openapi(table(
        Route("open", "/api/a/open", "a", "/a/open", public=True),
        Route("shut", "/api/a/shut", "a", "/a/shut",
              rate_limit=parse_rate_limit("10/60", "shut"))), specs, title="t", version="1")
    public = doc["paths"]["/api/a/open"]["get"]["responses"]
    protected = doc["paths"]["/api/a/shut"]["post"]["responses"]
    assert set(public) == {"200", "400", "413", "431", "502", "503", "504"}
    assert set(protected) == set(public) | {"401", "403", "429"}
    for status in set(protected) - {"200"}:
        assert protected[status]["content"] == {"application/json": {"schema": ERROR}}
        assert protected[status]["description"]
    assert "Retry-After" in protected["429"]["headers"]
    body = doc["components"]["schemas"]["GatewayError"]
    assert body["required"] == ["error"]
    assert body["properties"]["error"]["required"] == ["code", "message"]
    own = doc["paths"]["/health/ready"]["get"]["responses"]
    assert set(own) == {"200", "431", "503"}
    assert own["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Readiness"}
    assert dangling_refs(doc) == []
    checked = from_dict(json.loads(json.dumps(doc)))
    checked.validate()  # raises on a document the OpenAPI 3.1 meta-schema refuses
    assert all(isinstance(result, Ok) for result in checked.get_all_operations())


def test_a_status_the_service_declares_keeps_its_declaration() -> None:
    mine = {"description": "the service's own", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/GatewayError"}}}}
    service_op = op("x")
    service_op["responses"]["503"] = mine
    specs = {"a": spec("a", {"/a/x": {"get": service_op}},
                       {"GatewayError": {"type": "object", "title": "the service's"}})}
    doc = merge_openapi(table(Route("a", "/api/a", "a", "/a", public=True)), specs,
                        title="t", version="1")
    responses = doc["paths"]["/api/a/x"]["get"]["responses"]
    assert responses["503"] == mine  # the service's schema of that name, kept as it was
    assert doc["components"]["schemas"]["GatewayError"] == {"type": "object",
                                                            "title": "the service's"}
    assert responses["504"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/gateway__GatewayError"}
    assert dangling_refs(doc) == []
