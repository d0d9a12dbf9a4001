"""What a log line is about: the event being handled or the HTTP request being served.

Two context variables, bound where the work starts and read only when a line is written:
the consumer's dispatch binds the consumed event with its record around each attempt of its
handlers (`bind_event`), the request middleware (`core.logs.access`) binds the ASGI scope of
each request. Binding stores references, not a dict of fields: the hot path pays a context
variable set and reset per record, and the fields are built only for lines that are written.
This module imports nothing of core, so `core.messaging` can bind without an import cycle.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import ContextVar, Token
from typing import Any, ClassVar, Protocol


class HandledEvent(Protocol):
    """What a log line reads of a consumed event (a `BaseEvent`)."""

    EVENT_TYPE: ClassVar[str]


class HandledRecord(Protocol):
    """What a log line reads of the record it came in (a `core.messaging.Record`)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


Handling = tuple[HandledEvent, str, HandledRecord]
"""The event, its id as the dispatcher keys it, and its record."""

_event: ContextVar[Handling | None] = ContextVar("logged_event", default=None)
_request: ContextVar[MutableMapping[str, Any] | None] = ContextVar("logged_request",
                                                                   default=None)


def bind_event(event: HandledEvent, event_id: str,
               record: HandledRecord) -> Token[Handling | None]:
    """Lines logged until `unbind_event` name this event and where it was read from."""
    return _event.set((event, event_id, record))


def unbind_event(token: Token[Handling | None]) -> None:
    _event.reset(token)


def bind_request(scope: MutableMapping[str, Any]) -> Token[MutableMapping[str, Any] | None]:
    """Lines logged until `unbind_request` name this request; the scope is read when a line
    is written, so the route the router matched meanwhile is on it."""
    return _request.set(scope)


def unbind_request(token: Token[MutableMapping[str, Any] | None]) -> None:
    _request.reset(token)


def event_fields() -> dict[str, Any] | None:
    """The event being handled, as a log line shows it, or None outside a handler."""
    handling = _event.get()
    if handling is None:
        return None
    event, event_id, record = handling
    return {"type": event.EVENT_TYPE, "id": event_id, "topic": record.topic,
            "partition": record.partition, "offset": record.offset}


def request_fields() -> dict[str, Any] | None:
    """The request being served (method, path, and the route template once routed), or None
    outside a request."""
    scope = _request.get()
    if scope is None:
        return None
    fields: dict[str, Any] = {"method": scope.get("method"), "path": scope.get("path")}
    route = getattr(scope.get("route"), "path", None)
    if route is not None:
        fields["route"] = route
    return fields
