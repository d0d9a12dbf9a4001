"""The reference services' AsyncAPI documents: each validates with every reference resolved,
says what the static event catalog says each service handles, is served publicly at
`/asyncapi.json`; the gateway's merge of them validates and holds every service's channels;
`python -m core events docs` writes it, and fails on an invalid one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from typer.testing import CliRunner

from core.asyncapi import merge_asyncapi
from core.asyncapi.validation import problems
from core.commands import events as events_command
from core.commands.cli import app as cli
from core.commands.event_catalog import collect
from core.commands.event_docs import _NoKeys, documents
from core.security.verifier import TokenVerifier
from core.security.wiring import Security
from gateway.asyncapi import AsyncApiCache, asyncapi_routes
from gateway.tests.openapi_support import Route, table

ROOT = Path(__file__).resolve().parents[2]
Json = dict[str, Any]

CHANNELS = {
    "auth": {"auth.events"},
    "driver": {"driver.events", "driver.locations", "driver.commands", "driver.commands.reply"},
    "notification": {"notification.events", "user.requests", "notification.replies",
                     "auth.events", "user.events", "driver.events"},
    "order": {"order.events", "driver.commands", "order.saga-replies"},
    "user": {"auth.events", "user.events", "user.requests", "user.requests.reply"},
}


@pytest.fixture(scope="module")
def docs() -> dict[str, Json]:
    return documents(ROOT)


def test_every_service_document_validates_with_its_channels(docs: dict[str, Json]) -> None:
    assert set(docs) == set(CHANNELS)
    for service, doc in docs.items():
        assert problems(doc) == [], service
        assert set(doc["channels"]) == CHANNELS[service], service
        sends = [op for op in doc["operations"].values() if op["action"] == "send"]
        assert sends and all("messages" in op for op in sends), service  # all declared


def test_each_document_receives_what_the_event_catalog_says_it_handles(
        docs: dict[str, Json]) -> None:
    for service in collect(ROOT):
        doc = docs[service.name]
        received = {(message["name"], message["headers"]["properties"]["event_version"]["const"])
                    for op in doc["operations"].values() if op["action"] == "receive"
                    for ref in op.get("messages", ())
                    for message in [_resolve(doc, _resolve(doc, ref["$ref"])["$ref"])]}
        for event_type, version in service.handled:
            assert any(t == event_type and (version is None or v == str(version))
                       for t, v in received), (service.name, event_type, version)


def test_request_reply_and_saga_replies_are_documented(docs: dict[str, Json]) -> None:
    answer = docs["user"]["operations"]["user.answer.user.get_contact.v1"]
    ask = docs["notification"]["operations"]["notification.request.user.get_contact.v1"]
    assert answer["action"] == "receive" and ask["action"] == "send"
    assert answer["channel"] == ask["channel"] == {"$ref": "#/channels/user.requests"}
    replies = {ref["$ref"].rsplit("/", 1)[1] for op in (answer, ask)
               for ref in op["reply"]["messages"]}
    assert replies == {"user.contact.v1", "request.failed.v1"}
    # the ride saga: driver answers order's commands on the reply topic they name
    reserve = docs["driver"]["operations"]["driver.answer.driver.reserve.v1"]["reply"]
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in reserve["messages"]} == {
        "driver.reserved.v1", "driver.not_reserved.v1"}
    assert {"driver.reserved.v1", "driver.not_reserved.v1"} <= set(
        docs["order"]["channels"]["order.saga-replies"]["messages"])


def test_the_merge_validates_and_keeps_the_owner_s_message(docs: dict[str, Json]) -> None:
    merged = merge_asyncapi(docs, title="Events", version="7", unavailable=["legacy"])
    assert problems(merged) == []
    assert set(merged["channels"]) == set().union(*CHANNELS.values())
    assert set(merged["operations"]) == {op for d in docs.values() for op in d["operations"]}
    assert merged["info"]["x-unavailable-services"] == ["legacy"]
    # notification keeps a copy of auth.user_registered with fewer fields: auth's wins
    key = "auth.user_registered.v1"
    owned, copied = (docs[s]["components"]["messages"][key] for s in ("auth", "notification"))
    assert owned != copied
    assert merged["components"]["messages"][key] == owned
    # both services' messages on a shared topic are in its channel
    assert {"auth.user_registered.v1", "auth.roles_changed.v1", "auth.password_changed.v1"} \
        <= set(merged["channels"]["auth.events"]["messages"])


async def test_a_service_serves_its_document_publicly() -> None:
    from services.user.main import create_app

    app = create_app(security=Security(TokenVerifier(_NoKeys(), issuer="t", audience="t")))
    async with AsyncClient(transport=ASGITransport(app), base_url="http://user") as client:
        answer = await client.get("/asyncapi.json")  # no token
        openapi = (await client.get("/openapi.json")).json()
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json() == app.state.asyncapi()
    assert "/asyncapi.json" not in openapi["paths"]


async def test_the_gateway_merges_the_services_documents(docs: dict[str, Json]) -> None:
    routes = table(*(Route(s, f"/api/{s}", s, "/") for s in [*docs, "gone"]),
                   Route("old", "/api/old", "legacy"))

    async def fetch(service: str) -> Mapping[str, Any]:
        if service == "gone":
            raise ConnectionError("no instance")
        return docs[service]

    gateway = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    gateway.include_router(asyncapi_routes(AsyncApiCache(lambda: routes, fetch, title="Events",
                                                         version="3")))
    async with AsyncClient(transport=ASGITransport(gateway), base_url="http://gw") as client:
        answer = await client.get("/asyncapi.json")
    merged = answer.json()
    assert answer.status_code == 200 and problems(merged) == []
    assert set(merged["channels"]) == set().union(*CHANNELS.values())
    assert merged["info"]["title"] == "Events" and merged["info"]["version"] == "3"
    assert merged["info"]["x-unavailable-services"] == ["gone"]


async def test_the_gateway_refuses_a_document_that_is_not_asyncapi(
        docs: dict[str, Json]) -> None:
    routes = table(Route("auth", "/api/auth", "auth", "/"), Route("shop", "/api/shop", "shop"))

    async def fetch(service: str) -> Mapping[str, Any]:
        return docs["auth"] if service == "auth" else {"openapi": "3.1.0", "paths": {}}

    merged = await AsyncApiCache(lambda: routes, fetch).document()
    assert merged["info"]["x-unavailable-services"] == ["shop"]
    assert set(merged["channels"]) == {"auth.events"}


def test_the_command_writes_a_valid_document(tmp_path: Path) -> None:
    out = tmp_path / "events" / "asyncapi.json"
    result = CliRunner().invoke(cli, ["events", "docs", "--root", str(ROOT), "--out", str(out),
                                      "--version", "9"])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert problems(written) == [] and written["info"]["version"] == "9"
    assert set(written["channels"]) == set().union(*CHANNELS.values())
    assert f"wrote {out}: {len(written['channels'])} channels" in result.output


def test_the_command_fails_on_an_invalid_document(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(root: Path, **info: str) -> Json:
        return {"asyncapi": "3.0.0", "info": {"title": "t", "version": "1"},
                "channels": {"a": {"address": "a", "messages": {
                    "m": {"$ref": "#/components/messages/m"}}}},
                "operations": {"o": {"action": "publish", "channel": {"$ref": "#/channels/a"}}},
                "components": {"messages": {}}}

    monkeypatch.setattr(events_command, "merged", broken)
    out = tmp_path / "asyncapi.json"
    result = CliRunner().invoke(cli, ["events", "docs", "--out", str(out)])
    assert result.exit_code == 1
    assert "$ref '#/components/messages/m' resolves to nothing" in result.output
    assert "/operations/o" in result.output and "is not valid AsyncAPI 3.0" in result.output
    assert out.exists()  # written anyway, to be looked at


def _resolve(doc: Json, ref: str) -> Json:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node  # type: ignore[no-any-return]

