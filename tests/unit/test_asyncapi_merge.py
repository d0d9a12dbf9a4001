"""The merge on small documents: a topic is one channel whoever uses it, a message two
services describe differently is the owner's description whatever the order, the rest keep
their ids, and the result validates."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from core.app import Subscription
from core.asyncapi import asyncapi_document, merge_asyncapi, topology
from core.asyncapi.validation import problems
from core.messaging import HandlerRegistry, IntegrationEvent, MessageContext

Json = dict[str, Any]


class Full(BaseModel):
    sku: str
    price: int


class Partial(BaseModel):
    sku: str


class Priced(IntegrationEvent[Full]):
    EVENT_TYPE = "zshop.priced"


class PricedCopy(IntegrationEvent[Partial]):  # a consumer's copy: fewer fields
    EVENT_TYPE = "zshop.priced"


async def _noop(event: Any, ctx: MessageContext) -> None: ...


def reader(service: str) -> Json:
    handlers = HandlerRegistry()
    handlers.add(PricedCopy, _noop)
    return asyncapi_document(topology(service, publishes={f"{service}.events": []},
                                      subscriptions=[Subscription("zshop.events", handlers)]))


def test_the_owner_s_message_wins_before_or_after_a_copy() -> None:
    owner = asyncapi_document(topology("zshop", publishes={"zshop.events": [Priced]}))
    for readers in (("alpha",), ("alpha", "zzz")):  # a copy sorted before and after
        docs = {"zshop": owner, **{name: reader(name) for name in readers}}
        merged = merge_asyncapi(docs, title="All")
        assert problems(merged) == []
        message = merged["components"]["messages"]["zshop.priced.v1"]
        assert set(message["payload"]["properties"]["data"]["properties"]) == {"sku", "price"}
        assert set(merged["operations"]) == {"zshop.send.zshop.events"} | {
            op for name in readers for op in (f"{name}.send.{name}.events",
                                               f"{name}.receive.zshop.events")}


def test_without_an_owner_the_first_service_s_copy_is_kept() -> None:
    merged = merge_asyncapi({"beta": reader("beta"), "alpha": reader("alpha")}, title="All",
                            unavailable=["zshop", "zshop"])
    message = merged["components"]["messages"]["zshop.priced.v1"]
    assert set(message["payload"]["properties"]["data"]["properties"]) == {"sku"}
    assert merged["info"]["x-unavailable-services"] == ["zshop"]
    assert merged["info"]["description"] == "The events of alpha, beta; unavailable: zshop."
    assert problems(merged) == []


def test_a_shared_topic_unites_its_messages() -> None:
    a = asyncapi_document(topology("a", publishes={"shared": [Priced]}))
    b = asyncapi_document(topology("b", publishes={"shared": [_other()]}))
    merged = merge_asyncapi({"a": a, "b": b}, title="All")
    assert set(merged["channels"]["shared"]["messages"]) == {"zshop.priced.v1", "b.other.v1"}
    assert problems(merged) == []


def test_no_document_merges_to_an_empty_valid_one() -> None:
    merged = merge_asyncapi({}, title="All", version="1")
    assert merged["channels"] == merged["operations"] == {}
    assert problems(merged) == []


def _other() -> type[IntegrationEvent[Partial]]:
    class Other(IntegrationEvent[Partial]):
        EVENT_TYPE = "b.other"

    return Other
