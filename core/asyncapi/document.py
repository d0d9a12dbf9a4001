"""The AsyncAPI 3.0 document of one service, from its `Topology`.

Channels are topics (the channel id is the topic name); messages are event types at a version
(`<type>.v<version>`, under `components/messages`), with the event's JSON Schema as payload:
pydantic's validation-mode schema, the one `events check` compares, with its `$defs` inlined
so every message stands alone (a merged document then never mixes two services' `Point`s).
Operations are `<service>.<verb>.<topic or message>`: send, receive, and for request-reply a
send (the requester) or receive (the responder) with a `reply` object: the responder answers
on whatever topic the request's `reply_to` header names, the requester reads its own
`replies.<instance id>`.
"""

from __future__ import annotations

import copy
from typing import Any

from core.asyncapi.topology import EventClass, Operation, Topology
from core.messaging.types import (
    HEADER_CAUSATION_ID,
    HEADER_CORRELATION_ID,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    HEADER_EVENT_VERSION,
    HEADER_IN_REPLY_TO,
    HEADER_REPLY_BY,
    HEADER_REPLY_TO,
    HEADER_REQUEST_ID,
)

Json = dict[str, Any]
ASYNCAPI_VERSION = "3.0.0"
CONTENT_TYPE = "application/json"
REPLY_ADDRESS = f"$message.header#/{HEADER_REPLY_TO}"
REQUEST_HEADERS = (HEADER_REPLY_TO, HEADER_REQUEST_ID, HEADER_REPLY_BY)
REPLY_HEADERS = (HEADER_IN_REPLY_TO,)


def message_id(cls: EventClass) -> str:
    return f"{cls.EVENT_TYPE}.v{cls.EVENT_VERSION}"


def asyncapi_document(topology: Topology, *, title: str | None = None, version: str = "",
                      description: str = "") -> Json:
    """The document (asyncapi 3.0.0) of `topology`'s service."""
    doc = _Builder(topology.service)
    for operation in topology.operations:
        doc.operation(operation)
    info: Json = {"title": title or f"{topology.service} events", "version": version}
    if description:
        info["description"] = description
    return {"asyncapi": ASYNCAPI_VERSION, "info": info, "defaultContentType": CONTENT_TYPE,
            "channels": doc.channels, "operations": doc.operations,
            "components": {"messages": doc.messages}}


class _Builder:
    def __init__(self, service: str) -> None:
        self.service = service
        self.channels: dict[str, Json] = {}
        self.operations: dict[str, Json] = {}
        self.messages: dict[str, Json] = {}

    def operation(self, op: Operation) -> None:
        channel = self._channel(op.topic, op.topic)
        body: Json = {"action": op.action, "channel": {"$ref": f"#/channels/{op.topic}"}}
        if op.summary:
            body["summary"] = op.summary
        if op.messages is not None:
            body["messages"] = self._in_channel(op.topic, channel, op.messages)
        if op.reply is not None:
            if op.reply.own:  # the requester's own reply topic: its address is known
                channel_id = f"{self.service}.replies"
                reply_channel = self._channel(channel_id, "replies.{instance_id}")
                reply_channel["parameters"] = {"instance_id": {
                    "description": "The requesting instance's id (one reply topic each)."}}
                reply: Json = {}
            else:  # the responder answers where the request says
                channel_id = f"{op.topic}.reply"
                reply_channel = self._channel(channel_id, None)
                reply = {"address": {"location": REPLY_ADDRESS,
                                     "description": "The requester's reply topic."}}
            reply["channel"] = {"$ref": f"#/channels/{channel_id}"}
            reply["messages"] = self._in_channel(channel_id, reply_channel, op.reply.messages)
            body["reply"] = reply
            self._mark(op.messages or (), REQUEST_HEADERS)
            self._mark(op.reply.messages, REPLY_HEADERS)
        self.operations[op.id] = body

    def _mark(self, classes: tuple[EventClass, ...], headers: tuple[str, ...]) -> None:
        """Request-reply's own headers, on the messages that carry them."""
        for cls in classes:
            properties = self.messages[message_id(cls)]["headers"]["properties"]
            properties.update({name: {"type": "string"} for name in headers})

    def _channel(self, channel_id: str, address: str | None) -> Json:
        return self.channels.setdefault(channel_id, {"address": address, "messages": {}})

    def _in_channel(self, channel_id: str, channel: Json,
                    classes: tuple[EventClass, ...]) -> list[Json]:
        refs = []
        for cls in classes:
            mid = message_id(cls)
            self.messages.setdefault(mid, message(cls))
            channel["messages"][mid] = {"$ref": f"#/components/messages/{mid}"}
            refs.append({"$ref": f"#/channels/{channel_id}/messages/{mid}"})
        return refs


def message(cls: EventClass) -> Json:
    """The message object of event class `cls`."""
    out: Json = {
        "name": cls.EVENT_TYPE,
        "title": f"{cls.EVENT_TYPE} v{cls.EVENT_VERSION}",
        "contentType": CONTENT_TYPE,
        "correlationId": {"location": f"$message.header#/{HEADER_CORRELATION_ID}"},
        "headers": _headers(cls),
        "payload": payload_schema(cls),
    }
    doc = (cls.__doc__ or "").strip()
    if doc and not doc.startswith(("Usage docs:", "!!!")):  # pydantic's own docstrings
        out["summary"] = doc.split("\n\n")[0].replace("\n", " ")
    return out


def _headers(cls: EventClass) -> Json:
    """The Kafka headers the serializer writes (core.messaging.serialization)."""
    text = {"type": "string"}
    return {"type": "object", "required": [HEADER_EVENT_TYPE, HEADER_EVENT_VERSION,
                                           HEADER_EVENT_ID],
            "properties": {HEADER_EVENT_TYPE: {"const": cls.EVENT_TYPE},
                           HEADER_EVENT_VERSION: {"const": str(cls.EVENT_VERSION)},
                           HEADER_EVENT_ID: text, HEADER_CORRELATION_ID: text,
                           HEADER_CAUSATION_ID: text}}


def payload_schema(cls: EventClass) -> Json:
    """`cls`'s JSON Schema (validation mode) with every `#/$defs/` reference inlined."""
    schema: Json = cls.model_json_schema(mode="validation")
    defs: Json = schema.pop("$defs", {})
    return _inline(schema, defs, ())  # type: ignore[no-any-return]


def _inline(node: Any, defs: Json, seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen:
            raise ValueError(f"recursive schema {name}: it cannot be inlined")
        target = copy.deepcopy(defs[name])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs, (*seen, name))
    return {key: _inline(value, defs, seen) for key, value in node.items()}
