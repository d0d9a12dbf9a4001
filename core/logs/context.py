"""What a log line is about: the event being handled or the HTTP request being served.

Context variables, bound where the work starts and read only when a line is written: the
consumer's dispatch binds the consumed event with its record around each attempt of its
handlers (`bind_event`, or `core.correlation.bind_handling` with the event's ids: the event
shares `core.correlation`'s variable, so the hot path pays one set and reset per record for
both), the request middleware (`core.logs.access`) binds the ASGI scope of each request.
Binding stores references, not a dict of fields: the fields are built only for lines that are
written. This module imports only `core.correlation` (which imports nothing of core), so
`core.messaging` can bind without an import cycle.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextvars import ContextVar, Token
from typing import Any, ClassVar, Protocol

from core.correlation import Bound, _current


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


_request: ContextVar[MutableMapping[str, Any] | None] = ContextVar("logged_request",
                                                                   default=None)


def bind_event(event: HandledEvent, event_id: str, record: HandledRecord) -> Token[Bound]:
    """Lines logged until `unbind_event` name this event and where it was read from (the
    correlation ids bound meanwhile stay as they are)."""
    return _current.set((_current.get()[0], event, event_id, record))


def unbind_event(token: Token[Bound]) -> None:
    _current.reset(token)


def bind_request(scope: MutableMapping[str, Any]) -> Token[MutableMapping[str, Any] | None]:
    """Lines logged until `unbind_request` name this request; the scope is read when a line
    is written, so the route the router matched meanwhile is on it."""
    return _request.set(scope)


def unbind_request(token: Token[MutableMapping[str, Any] | None]) -> None:
    _request.reset(token)


def event_fields() -> dict[str, Any] | None:
    """The event being handled, as a log line shows it, or None outside a handler."""
    _, event, event_id, record = _current.get()
    if event is None:
        return None
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
