"""The check itself: an invalid document and a dangling reference both fail, naming where;
the official schema alone lets the dangling reference through (why the second check)."""

from __future__ import annotations

import json
from typing import Any

from core.asyncapi import Request, asyncapi_document, topology
from core.asyncapi.validation import SCHEMA_FILE, _validator, dangling_refs, problems
from tests.unit.test_asyncapi_document import GetPrice, ItemAdded, PriceFound

Json = dict[str, Any]


def valid() -> Json:
    return asyncapi_document(topology("shop", publishes={
        "shop.events": [ItemAdded], "shop.requests": [Request(GetPrice, PriceFound)]}))


def test_the_vendored_schema_is_the_official_3_0_0_one() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["title"] == "AsyncAPI 3.0.0 schema."
    assert schema["properties"]["asyncapi"]["const"] == "3.0.0"
    assert (SCHEMA_FILE.parent / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert (SCHEMA_FILE.parent / "VERSION").read_text().strip() == "6.11.1"


def test_a_valid_document_has_no_problem() -> None:
    assert problems(valid()) == []


def test_a_document_the_schema_refuses_fails_naming_where() -> None:
    doc = valid()
    doc["operations"]["shop.send.shop.events"]["action"] = "publish"  # AsyncAPI 2's verb
    del doc["info"]["version"]
    found = problems(doc)
    assert any(line.startswith("/info: 'version' is a required property") for line in found)
    assert any(line.startswith("/operations/shop.send.shop.events") for line in found), found
    assert problems({"asyncapi": "2.6.0", "info": {"title": "t", "version": "1"}})


def test_a_dangling_reference_fails_though_the_schema_accepts_it() -> None:
    doc = valid()
    del doc["components"]["messages"]["shop.item_added.v1"]
    assert list(_validator().iter_errors(doc)) == []  # the official schema lets it through
    assert problems(doc) == [
        "/channels/shop.events/messages/shop.item_added.v1: $ref "
        "'#/components/messages/shop.item_added.v1' resolves to nothing"]


def test_every_kind_of_bad_reference_is_named() -> None:
    doc = valid()
    op = doc["operations"]["shop.request.shop.get_price.v1"]
    op["channel"] = {"$ref": "#/channels/shop.gone"}
    op["reply"]["messages"][0] = {"$ref": "other.json#/components/messages/x"}
    op["messages"] = [{"$ref": "#/channels/shop.requests/messages/shop.get_price.v9"}]
    found = dangling_refs(doc)
    assert found == [
        "/operations/shop.request.shop.get_price.v1/channel: $ref '#/channels/shop.gone' "
        "resolves to nothing",
        "/operations/shop.request.shop.get_price.v1/messages/0: $ref "
        "'#/channels/shop.requests/messages/shop.get_price.v9' resolves to nothing",
        "/operations/shop.request.shop.get_price.v1/reply/messages/0: $ref "
        "'other.json#/components/messages/x' is not a reference inside the document"]


def test_references_follow_json_pointer_escapes_and_list_indexes() -> None:
    doc = {"a/b": {"c~d": [{"x": 1}]}, "refs": [
        {"$ref": "#/a~1b/c~0d/0/x"}, {"$ref": "#/a~1b/c~0d/1"}, {"$ref": "#"}]}
    assert dangling_refs(doc) == ["/refs/1: $ref '#/a~1b/c~0d/1' resolves to nothing"]
