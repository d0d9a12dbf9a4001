"""The messaging vocabulary: records as they cross the wire and what handlers receive."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from core.runtime import Runtime

if TYPE_CHECKING:
    from confluent_kafka import Message

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


class MessageRecord(Record):
    """A `Record` over a librdkafka message, as the consumer hands it out: building one costs
    four reads (what the lanes and offsets need), and the value, headers and timestamp are
    read from the message on first use (the headers once, then kept). It compares, prints and
    `dataclasses.replace`s like the `Record` it stands for (a replaced or copied one is a plain
    `Record`)."""

    __slots__ = ("_headers", "_msg")
    _msg: Message
    _headers: Headers | None

    def __new__(cls, *args: Any, **kwargs: Any) -> Record:  # type: ignore[misc]
        # Only `dataclasses.replace` and copies call the class: they get a plain Record.
        return Record(*args, **kwargs)

    @staticmethod
    def of(msg: Message) -> Record:
        """The record of `msg` (a message without an error)."""
        record = _new(MessageRecord)
        _set_topic(record, msg.topic())
        _set_partition(record, msg.partition())
        _set_offset(record, msg.offset())
        _set_key(record, msg.key())
        _set_msg(record, msg)
        _set_headers(record, None)
        return record

    # Properties over the parent's fields: read-only, as the fields of a frozen Record are.
    @property
    def value(self) -> bytes | None:
        return self._msg.value()

    @property
    def headers(self) -> Headers:
        kept = self._headers
        if kept is not None:
            return kept
        headers: Headers = self._msg.headers() or []  # type: ignore[assignment]  # a list here
        _set_headers(self, headers)
        return headers

    @property
    def timestamp_ms(self) -> int | None:
        return self._msg.timestamp()[1]

    def _fields(self) -> tuple[Any, ...]:
        return (self.topic, self.partition, self.offset, self.key, self.value, self.headers,
                self.timestamp_ms)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self._fields() == (other.topic, other.partition, other.offset, other.key,
                                  other.value, other.headers, other.timestamp_ms)

    __hash__ = Record.__hash__

    def __reduce__(self) -> tuple[type[Record], tuple[Any, ...]]:
        return Record, self._fields()


# Slot setters, called directly: the frozen dataclass's own `__setattr__` refuses writes, and
# `object.__setattr__` costs a lookup per field.
_new = object.__new__
_set_topic = Record.__dict__["topic"].__set__
_set_partition = Record.__dict__["partition"].__set__
_set_offset = Record.__dict__["offset"].__set__
_set_key = Record.__dict__["key"].__set__
_set_msg = MessageRecord.__dict__["_msg"].__set__
_set_headers = MessageRecord.__dict__["_headers"].__set__


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
