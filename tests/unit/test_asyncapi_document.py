"""The AsyncAPI generator on a small shop: channels are topics, messages event types at a
version with their JSON Schemas, operations who sends and who receives; request-reply as a
send or receive with AsyncAPI 3.0's `reply`. Every document made here must validate."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, Table

from core.app import Subscription
from core.asyncapi import Request, asyncapi_document, topology
from core.asyncapi.document import payload_schema
from core.asyncapi.topology import Topology
from core.asyncapi.validation import problems
from core.messaging import (
    EventRegistry,
    HandlerRegistry,
    IntegrationEvent,
    MessageContext,
    RequestResponder,
)
from core.projections import Projection
from core.saga import participant

Json = dict[str, Any]


class Sku(BaseModel):
    code: str


class ItemData(BaseModel):
    item_id: str
    sku: Sku


class ItemDataV2(ItemData):
    quantity: int = 1


class ItemAdded(IntegrationEvent[ItemData]):
    """An item went into a basket."""

    EVENT_TYPE = "shop.item_added"


class ItemAddedV2(IntegrationEvent[ItemDataV2]):
    EVENT_TYPE = "shop.item_added"
    EVENT_VERSION = 2


class PriceQuery(BaseModel):
    item_id: str


class GetPrice(IntegrationEvent[PriceQuery]):
    EVENT_TYPE = "shop.get_price"


class Price(BaseModel):
    cents: int


class PriceFound(IntegrationEvent[Price]):
    EVENT_TYPE = "shop.price"


class NoPrice(IntegrationEvent[PriceQuery]):
    EVENT_TYPE = "shop.no_price"


def check(doc: Json) -> Json:
    assert problems(doc) == []
    return doc


def test_published_events_make_a_channel_its_messages_and_a_send_operation() -> None:
    doc = check(asyncapi_document(
        topology("shop", publishes={"shop.events": [ItemAdded, ItemAddedV2]}),
        version="1.2", description="The shop."))
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"] == {"title": "shop events", "version": "1.2", "description": "The shop."}
    assert doc["channels"] == {"shop.events": {"address": "shop.events", "messages": {
        "shop.item_added.v1": {"$ref": "#/components/messages/shop.item_added.v1"},
        "shop.item_added.v2": {"$ref": "#/components/messages/shop.item_added.v2"}}}}
    assert doc["operations"]["shop.send.shop.events"] == {
        "action": "send", "channel": {"$ref": "#/channels/shop.events"},
        "summary": "shop publishes to shop.events",
        "messages": [{"$ref": "#/channels/shop.events/messages/shop.item_added.v1"},
                     {"$ref": "#/channels/shop.events/messages/shop.item_added.v2"}]}


def test_each_version_is_its_own_message_with_its_schema_and_headers() -> None:
    doc = check(asyncapi_document(
        topology("shop", publishes={"shop.events": [ItemAdded, ItemAddedV2]})))
    v1, v2 = (doc["components"]["messages"][f"shop.item_added.v{n}"] for n in (1, 2))
    assert v1["name"] == v2["name"] == "shop.item_added"
    assert (v1["title"], v2["title"]) == ("shop.item_added v1", "shop.item_added v2")
    assert v1["summary"] == "An item went into a basket." and "summary" not in v2
    assert "quantity" not in v1["payload"]["properties"]["data"]["properties"]
    assert v2["payload"]["properties"]["data"]["properties"]["quantity"]["type"] == "integer"
    assert v2["headers"]["properties"]["event_version"] == {"const": "2"}
    assert v1["headers"]["properties"]["event_type"] == {"const": "shop.item_added"}
    assert v1["correlationId"] == {"location": "$message.header#/correlation_id"}


def test_a_payload_is_the_contract_schema_with_its_defs_inlined() -> None:
    schema = payload_schema(ItemAdded)
    assert "$defs" not in schema and "$ref" not in str(schema)
    data = schema["properties"]["data"]
    assert data["required"] == ["item_id", "sku"]
    assert data["properties"]["sku"]["properties"]["code"] == {"title": "Code", "type": "string"}


def test_a_recursive_schema_is_refused_by_name() -> None:
    class Node(BaseModel):
        children: list[Node] = []

    class Tree(IntegrationEvent[Node]):
        EVENT_TYPE = "shop.tree"

    with pytest.raises(ValueError, match="recursive schema Node"):
        payload_schema(Tree)


def test_subscriptions_and_projections_make_receive_operations() -> None:
    events = EventRegistry()
    handlers = HandlerRegistry(events)
    handlers.add(ItemAddedV2, _nothing, name="count")

    async def anything(event: Any, ctx: MessageContext) -> None: ...

    table = Table("baskets", MetaData(), Column("id", Integer, primary_key=True))
    baskets = Projection("baskets", topics=["shop.events"], tables=[table], events=events)
    baskets.add(ItemAdded, _apply)  # the projection applies every version of the type
    doc = check(asyncapi_document(topology(
        "stats", subscriptions=[Subscription("shop.events", handlers),
                                Subscription(("audit", "shop.events"), anything)],
        projections=[baskets])))
    ops = doc["operations"]
    assert ops["stats.receive.shop.events"]["action"] == "receive"
    assert ops["stats.receive.shop.events"]["messages"] == [
        {"$ref": "#/channels/shop.events/messages/shop.item_added.v2"}]
    # a plain function says nothing of its events: the operation takes the channel's all
    assert "messages" not in ops["stats.receive.audit"]
    assert "messages" not in ops["stats.receive.shop.events.2"]  # the same topic again
    assert ops["stats.project.baskets.shop.events"]["messages"] == [
        {"$ref": f"#/channels/shop.events/messages/shop.item_added.v{n}"} for n in (1, 2)]
    assert doc["channels"]["audit"] == {"address": "audit", "messages": {}}


def test_a_topic_published_by_name_only_has_a_send_without_messages() -> None:
    doc = check(asyncapi_document(topology("shop", publishes=["shop.events"])))
    assert doc["operations"]["shop.send.shop.events"] == {
        "action": "send", "channel": {"$ref": "#/channels/shop.events"},
        "summary": "shop publishes to shop.events"}


def test_a_responder_receives_and_replies_where_the_request_says() -> None:
    responder = RequestResponder()

    @responder.responds(GetPrice)
    async def price(request: GetPrice) -> PriceFound | NoPrice:
        raise NotImplementedError

    doc = check(asyncapi_document(topology(
        "pricing", subscriptions=[Subscription("shop.requests", responder)])))
    op = doc["operations"]["pricing.answer.shop.get_price.v1"]
    assert op["action"] == "receive" and op["channel"] == {"$ref": "#/channels/shop.requests"}
    assert op["messages"] == [{"$ref": "#/channels/shop.requests/messages/shop.get_price.v1"}]
    assert op["reply"]["address"]["location"] == "$message.header#/reply_to"
    assert op["reply"]["channel"] == {"$ref": "#/channels/shop.requests.reply"}
    assert [m["$ref"].rsplit("/", 1)[1] for m in op["reply"]["messages"]] == [
        "shop.price.v1", "shop.no_price.v1", "request.failed.v1"]
    # the reply topic is the requester's: AsyncAPI's null address
    assert doc["channels"]["shop.requests.reply"]["address"] is None
    messages = doc["components"]["messages"]
    assert {"reply_to", "request_id"} <= set(messages["shop.get_price.v1"]["headers"][
        "properties"])
    assert "in_reply_to" in messages["shop.price.v1"]["headers"]["properties"]


def test_a_requester_sends_and_reads_the_reply_on_its_own_topic() -> None:
    doc = check(asyncapi_document(topology("basket", publishes={
        "basket.events": [ItemAdded], "shop.requests": [Request(GetPrice, PriceFound)]})))
    op = doc["operations"]["basket.request.shop.get_price.v1"]
    assert op["action"] == "send"
    assert op["messages"] == [{"$ref": "#/channels/shop.requests/messages/shop.get_price.v1"}]
    assert "address" not in op["reply"]  # its channel has one
    assert op["reply"]["channel"] == {"$ref": "#/channels/basket.replies"}
    assert doc["channels"]["basket.replies"]["address"] == "replies.{instance_id}"
    assert set(doc["channels"]["basket.replies"]["parameters"]) == {"instance_id"}
    assert set(doc["channels"]["basket.replies"]["messages"]) == {"shop.price.v1",
                                                                 "request.failed.v1"}
    # a topic with requests only has no plain send operation
    assert set(doc["operations"]) == {"basket.send.basket.events",
                                      "basket.request.shop.get_price.v1"}


def test_a_saga_participant_replies_where_the_command_says() -> None:
    commands = HandlerRegistry()

    @participant(commands, GetPrice)
    async def quote(command: GetPrice, ctx: MessageContext) -> PriceFound | NoPrice | None:
        raise NotImplementedError

    @participant(commands, ItemAdded)
    async def note(command: ItemAdded, ctx: MessageContext) -> None:  # answers nothing
        raise NotImplementedError

    doc = check(asyncapi_document(topology(
        "pricing", subscriptions=[Subscription("pricing.commands", commands)])))
    assert set(doc["operations"]) == {"pricing.receive.pricing.commands",
                                      "pricing.answer.shop.get_price.v1"}
    assert doc["operations"]["pricing.receive.pricing.commands"]["messages"] == [
        {"$ref": "#/channels/pricing.commands/messages/shop.item_added.v1"}]
    reply = doc["operations"]["pricing.answer.shop.get_price.v1"]["reply"]
    assert reply["address"]["location"] == "$message.header#/reply_to"
    # a saga's failure is a reply of its own, not request-reply's request.failed
    assert [m["$ref"].rsplit("/", 1)[1] for m in reply["messages"]] == [
        "shop.price.v1", "shop.no_price.v1"]


def test_a_reply_annotation_that_cannot_be_resolved_names_no_reply() -> None:
    responder = RequestResponder()

    @responder.responds(GetPrice)
    async def price(request: GetPrice) -> Undefined:  # type: ignore[name-defined]  # noqa: F821
        raise NotImplementedError

    assert responder.handlers.replies == {GetPrice: ()}
    doc = check(asyncapi_document(topology(
        "pricing", subscriptions=[Subscription("shop.requests", responder)])))
    reply = doc["operations"]["pricing.answer.shop.get_price.v1"]["reply"]
    assert [m["$ref"].rsplit("/", 1)[1] for m in reply["messages"]] == ["request.failed.v1"]


def test_an_empty_service_is_a_valid_document() -> None:
    doc = check(asyncapi_document(Topology("idle")))
    assert doc["channels"] == doc["operations"] == {} and doc["components"] == {"messages": {}}


async def _nothing(event: Any, ctx: MessageContext) -> None: ...


async def _apply(event: Any, view: Any) -> None: ...
