"""Who sends and who receives what, on which topic: read from what `create_service` is given.

Received events come from the subscriptions (a `HandlerRegistry` names the (type, version)
pairs it handles and, in `replies`, what a request-reply responder or a saga participant
answers with, read from its functions' return annotations) and the projections (the types
they apply, every registered version). Sent events come from `publishes`: a topic name alone
says nothing of its events, so a service lists them per topic (`publishes={TOPIC: [Event,
...]}`), and a request it sends as `Request(GetContact, Contact)`: answered on its own reply
topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from core.messaging.events import BaseEvent
from core.messaging.handlers import HandlerRegistry
from core.messaging.request_reply import RequestFailed, RequestResponder
from core.projections import Projection

EventClass = type[BaseEvent[Any]]


@dataclass(frozen=True, slots=True)
class Request:
    """A request the service sends (request-reply): `request` on the topic it is listed
    under, answered by one of `replies` on the sender's own reply topic."""

    request: EventClass
    replies: tuple[EventClass, ...]

    def __init__(self, request: EventClass, *replies: EventClass) -> None:
        object.__setattr__(self, "request", request)
        object.__setattr__(self, "replies", replies)


Published = Iterable[str] | Mapping[str, Sequence[EventClass | Request]]
"""`create_service(publishes=...)`: topic names, or topic -> the events sent there."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to an operation's messages: `messages` to the topic the request's
    `reply_to` header names (`own`: the sender's reply topic; else the requester's)."""

    messages: tuple[EventClass, ...]
    own: bool


@dataclass(frozen=True, slots=True)
class Operation:
    """One send or receive of a service on one topic. `messages` None: not declared (a
    topic published by name only, a plain handler function): any message of the channel."""

    id: str
    action: Literal["send", "receive"]
    topic: str
    messages: tuple[EventClass, ...] | None
    reply: Reply | None = None
    summary: str = ""


@dataclass
class Topology:
    """A service's operations, in declaration order (the document keeps it)."""

    service: str
    operations: list[Operation] = field(default_factory=list)

    def add(self, operation: Operation) -> None:
        taken = {op.id for op in self.operations}
        name, n = operation.id, 1
        while name in taken:  # the same topic twice (two subscriptions): number them
            n += 1
            name = f"{operation.id}.{n}"
        self.operations.append(Operation(name, operation.action, operation.topic,
                                         operation.messages, operation.reply,
                                         operation.summary))


def topology(service: str, *, publishes: Published = (), subscriptions: Iterable[Any] = (),
             projections: Iterable[Projection] = ()) -> Topology:
    """`subscriptions`: `core.app.Subscription`s (read by attribute: core.app imports this)."""
    out = Topology(service)
    for topic, events in _published(publishes):
        plain = None if events is None else tuple(
            e for e in events if not isinstance(e, Request))
        if plain is None or plain or len(plain) == len(events or ()):  # requests only: none
            out.add(Operation(f"{service}.send.{topic}", "send", topic, plain,
                              summary=f"{service} publishes to {topic}"))
        for request in (e for e in events or () if isinstance(e, Request)):
            out.add(Operation(
                f"{service}.request.{_message_id(request.request)}", "send", topic,
                (request.request,), Reply((*request.replies, RequestFailed), own=True),
                summary=f"{service} asks {request.request.EVENT_TYPE} on {topic}"))
    for sub in subscriptions:
        for topic in (sub.topics,) if isinstance(sub.topics, str) else sub.topics:
            _receive(out, topic, sub.handler)
    for projection in projections:
        types = set(projection.event_types)
        classes = tuple(c for c in projection.events if c.EVENT_TYPE in types)
        for topic in projection.topics:
            out.add(Operation(f"{service}.project.{projection.name}.{topic}", "receive",
                              topic, _sorted(classes),
                              summary=f"projection {projection.name} reads {topic}"))
    return out


def _published(publishes: Published) -> list[tuple[str, Sequence[EventClass | Request] | None]]:
    if isinstance(publishes, Mapping):
        return [(topic, tuple(events)) for topic, events in publishes.items()]
    return [(topic, None) for topic in publishes]


def _receive(out: Topology, topic: str, handler: object) -> None:
    """A receive operation for what the handlers only read, and one with a `reply` for each
    event answered (a responder's requests; a saga participant's commands that name their
    replies): the answer goes where the record's `reply_to` header says."""
    service = out.service
    responder = isinstance(handler, RequestResponder)
    registry = handler.handlers if isinstance(handler, RequestResponder) else handler
    if not isinstance(registry, HandlerRegistry):  # a plain function: any message
        out.add(Operation(f"{service}.receive.{topic}", "receive", topic, None,
                          summary=f"{service} consumes {topic}"))
        return
    answered = {c: r for c, r in registry.replies.items() if r or responder}
    found = (registry.events.get(t, v) for t, v in registry.handled())
    read = _sorted(c for c in found if c is not None and c not in answered)
    if read or not answered:
        out.add(Operation(f"{service}.receive.{topic}", "receive", topic, read,
                          summary=f"{service} consumes {topic}"))
    failed = (RequestFailed,) if responder else ()
    for request, replies in answered.items():
        out.add(Operation(
            f"{service}.answer.{_message_id(request)}", "receive", topic, (request,),
            Reply((*replies, *failed), own=False),
            summary=f"{service} answers {request.EVENT_TYPE} on {topic}"))


def _sorted(classes: Iterable[EventClass]) -> tuple[EventClass, ...]:
    return tuple(sorted(set(classes), key=lambda c: (c.EVENT_TYPE, c.EVENT_VERSION)))


def _message_id(cls: EventClass) -> str:
    return f"{cls.EVENT_TYPE}.v{cls.EVENT_VERSION}"
