"""The messaging vocabulary: records as they cross the wire and what handlers receive."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from core.runtime import Runtime

if TYPE_CHECKING:
    from core.messaging.events import BaseEvent

Headers: TypeAlias = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record, client-library neutral."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    timestamp_ms: int | None = None

    def header(self, name: str) -> str | None:
        """The last value of header `name`, decoded as UTF-8 (Kafka allows repeats)."""
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode("utf-8", "replace") if value is not None else None
        return None


@dataclass(frozen=True, slots=True)
class MessageContext:
    """What a handler may want to know about the record behind the event it handles."""

    record: Record
    attempt: int
    consumer_group: str
    session: Any = None
    """The idempotency store's transaction (an SQLAlchemy AsyncSession with the inbox), or
    None in memory: write through it and the writes commit together with the inbox row."""
    runtime: Runtime = field(default_factory=Runtime)
    """The running service's parts by typed key (`ctx.runtime[CACHE]`; core.runtime), filled
    before the consumers start: what `create_service` built and what its hooks yielded."""

    @property
    def correlation_id(self) -> str | None:
        return self.record.header(HEADER_CORRELATION_ID)


EventHandler: TypeAlias = Callable[["BaseEvent[Any]", MessageContext], Awaitable[None]]

# Header names: one constant each, written by the producer side, read by consumers and tools.
HEADER_EVENT_TYPE = "event_type"
HEADER_EVENT_VERSION = "event_version"
HEADER_EVENT_ID = "event_id"
HEADER_CORRELATION_ID = "correlation_id"
HEADER_CAUSATION_ID = "causation_id"
HEADER_CONTENT_TYPE = "content-type"
HEADER_REPLY_TO = "reply_to"
HEADER_REQUEST_ID = "request_id"
"""On a request: the id of this one call, new for every send, so one request event sent twice
makes two calls, each answered."""
HEADER_REPLY_BY = "reply_by"
"""On a request: when its caller stops waiting, Unix time in milliseconds."""
HEADER_IN_REPLY_TO = "in_reply_to"
"""On a reply: the `request_id` of the call it answers (the request-reply correlation id), or
the request's event id when the requester set no `request_id`."""
