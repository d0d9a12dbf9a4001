"""Events to bytes and back, with schema versions.

The wire format is a JSON envelope (the event's fields plus `event_type` and `event_version`)
and headers that repeat type, version and ids, so a consumer picks the class without parsing
the body. An event written at an older version is upcast, one version at a time, to the newest
version this process knows before any handler sees it; handlers only ever meet one shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

from pydantic import ValidationError

from core.messaging.errors import (
    DeserializationError,
    MalformedEventError,
    UnknownEventError,
    UnknownEventTypeError,
)
from core.messaging.events import BaseEvent
from core.messaging.types import (
    HEADER_CAUSATION_ID,
    HEADER_CONTENT_TYPE,
    HEADER_CORRELATION_ID,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    HEADER_EVENT_VERSION,
    Headers,
)

CONTENT_TYPE = b"application/json"
Header = tuple[str, bytes]
_CONTENT_TYPE_HEADER: Header = (HEADER_CONTENT_TYPE, CONTENT_TYPE)
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the `data` of version N into the `data` of version N+1."""

EventClass = type[BaseEvent[Any]]
C = TypeVar("C", bound=EventClass)


class EventRegistry:
    """Which event classes and upcasters this process knows, by type and version.

    Not thread-safe for writes: register everything at start-up, then only read.
    """

    def __init__(self) -> None:
        self._classes: dict[tuple[str, int], EventClass] = {}
        self._latest: dict[str, EventClass] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self.generation = 0
        """Bumped by every change, so caches built on this registry know to refresh."""

    def register(self, cls: C) -> C:
        """Know `cls`; usable as a class decorator. Registering twice is harmless."""
        if not cls.EVENT_TYPE:
            raise TypeError(f"{cls.__name__} has no EVENT_TYPE")
        key = (cls.EVENT_TYPE, cls.EVENT_VERSION)
        known = self._classes.get(key)
        if known is not None and known is not cls:
            raise ValueError(f"{key} is already registered to {known.__name__}")
        self._classes[key] = cls
        self.generation += 1
        latest = self._latest.get(cls.EVENT_TYPE)
        if latest is None or latest.EVENT_VERSION < cls.EVENT_VERSION:
            self._latest[cls.EVENT_TYPE] = cls
        return cls

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function that lifts `event_type` data from `from_version` to the next."""

        def decorator(fn: Upcaster) -> Upcaster:
            self._upcasters[(event_type, from_version)] = fn
            self.generation += 1
            return fn

        return decorator

    def has_upcaster(self, event_type: str, from_version: int) -> bool:
        """Whether `event_type` data of `from_version` can be lifted to the next version."""
        return (event_type, from_version) in self._upcasters

    def latest(self, event_type: str) -> EventClass | None:
        return self._latest.get(event_type)

    def get(self, event_type: str, version: int) -> EventClass | None:
        return self._classes.get((event_type, version))

    def upcast(self, event_type: str, version: int, target: int, data: Any) -> Any:
        for v in range(version, target):
            step = self._upcasters.get((event_type, v))
            if step is None:
                raise UnknownEventError(f"no upcaster for {event_type} v{v} -> v{v + 1}")
            data = step(data)
        return data

    def __iter__(self) -> Iterator[EventClass]:
        return iter(self._classes.values())


class EventSerializer:
    """Encodes events and decodes records into the newest known version. Safe to share
    between tasks of one event loop.

    Hot path: the type and version headers (raw bytes) map through a small cache straight to
    the class that parses the body, so a current-version record costs one dict look-up plus
    pydantic's JSON validation.

    `service_name` is written into the envelope of every event that does not name its origin,
    so publishers need not set it on each event they build.
    """

    def __init__(self, registry: EventRegistry, *, service_name: str = "") -> None:
        self.registry = registry
        self.service_name = service_name
        self._context = {"service_name": service_name}
        self._current: dict[tuple[bytes, bytes], EventClass] = {}
        self._generation = registry.generation
        self._envelopes: dict[type[BaseEvent[Any]], tuple[Header, Header]] = {}
        """Each class's type and version headers, encoded once (a microsecond per record)."""

    def serialize(self, event: BaseEvent[Any]) -> tuple[bytes, Headers]:
        cls = type(event)
        envelope = self._envelopes.get(cls)
        if envelope is None:
            envelope = self._envelopes[cls] = _envelope(cls)
        headers: Headers = [
            envelope[0],
            envelope[1],
            (HEADER_EVENT_ID, str(event.event_id).encode()),
            _CONTENT_TYPE_HEADER,
        ]
        if event.correlation_id:
            headers.append((HEADER_CORRELATION_ID, event.correlation_id.encode()))
        if event.causation_id:
            headers.append((HEADER_CAUSATION_ID, event.causation_id.encode()))
        # bytes, no str detour; the context fills an empty service_name (see BaseEvent)
        return event.__pydantic_serializer__.to_json(event, context=self._context), headers

    def deserialize(self, value: bytes | None, headers: Headers | None = None) -> BaseEvent[Any]:
        """Decode one record's value. Every failure, whatever raised it (a malformed header, a
        bug in an upcaster), is a `DeserializationError`: the record is poison, not a crash.
        `UnknownEventTypeError` means the type is not known here at all."""
        if not headers:
            return self.deserialize_as(value, headers, None, None)
        envelope = envelope_headers(headers)
        return self.deserialize_as(value, headers, envelope.event_type, envelope.version)

    def deserialize_as(self, value: bytes | None, headers: Headers | None,
                       event_type: bytes | None, version: bytes | None) -> BaseEvent[Any]:
        """`deserialize`, for a caller that has read the raw type and version headers already
        (`envelope_headers`): the headers are walked once per record, not once per step."""
        try:
            # `_deserialize`'s common case inline (a known type, current version): the
            # consumer's hot path, one call less per record.
            if value and headers and self._generation == self.registry.generation:
                cls = self._current.get((event_type or b"", version or b""))
                if cls is not None:
                    try:
                        event: BaseEvent[Any] = cls.__pydantic_validator__.validate_json(value)
                        return event
                    except ValidationError as exc:
                        raise MalformedEventError(
                            f"{cls.EVENT_TYPE} v{cls.EVENT_VERSION}: {_first_errors(exc)}"
                        ) from exc
            return self._deserialize(value, headers, event_type, version)
        except DeserializationError:
            raise
        except Exception as exc:
            raise MalformedEventError(f"cannot decode: {type(exc).__name__}: {exc}") from exc

    def _deserialize(self, value: bytes | None, headers: Headers | None,
                     event_type: bytes | None, version: bytes | None) -> BaseEvent[Any]:
        if not value:
            raise MalformedEventError("record has no value")
        if headers:
            if self._generation != self.registry.generation:
                self._current.clear()
                self._generation = self.registry.generation
            cls = self._current.get((event_type or b"", version or b""))
            if cls is not None:
                try:
                    # the validator itself: `model_validate_json` adds only a Python frame
                    event: BaseEvent[Any] = cls.__pydantic_validator__.validate_json(value)
                    return event
                except ValidationError as exc:
                    raise MalformedEventError(
                        f"{cls.EVENT_TYPE} v{cls.EVENT_VERSION}: {_first_errors(exc)}"
                    ) from exc
        return self._deserialize_slow(value, headers or [])

    def _deserialize_slow(self, value: bytes, headers: Headers) -> BaseEvent[Any]:
        event_type, version, body = _identify(value, headers)
        target = self.registry.latest(event_type)
        if target is None:
            raise UnknownEventTypeError(f"unknown event type {event_type!r}")
        if version > target.EVENT_VERSION:
            raise UnknownEventError(
                f"{event_type} v{version} is newer than the newest known v{target.EVENT_VERSION}"
            )
        try:
            if version == target.EVENT_VERSION and body is None:
                event = target.model_validate_json(value)
                self._current[(event_type.encode(), str(version).encode())] = target
                return event
            if body is None:
                body = _parse(value)
            try:
                body["data"] = self.registry.upcast(event_type, version, target.EVENT_VERSION,
                                                    body.get("data"))
            except DeserializationError:
                raise
            except Exception as exc:
                raise MalformedEventError(
                    f"upcasting {event_type} v{version} to v{target.EVENT_VERSION} failed: "
                    f"{type(exc).__name__}: {exc}") from exc
            return target.model_validate(body)
        except ValidationError as exc:
            raise MalformedEventError(f"{event_type} v{version}: {_first_errors(exc)}") from exc


def _envelope(cls: type[BaseEvent[Any]]) -> tuple[Header, Header]:
    return ((HEADER_EVENT_TYPE, cls.EVENT_TYPE.encode()),
            (HEADER_EVENT_VERSION, str(cls.EVENT_VERSION).encode()))


def _identify(value: bytes, headers: Headers) -> tuple[str, int, dict[str, Any] | None]:
    """Type and version from headers when present (no parse), else from the body."""
    event_type = version = None
    for name, raw in headers:
        if raw is None:  # Kafka allows a header without a value: as good as absent
            continue
        if name == HEADER_EVENT_TYPE:
            event_type = raw.decode("utf-8", "replace")
        elif name == HEADER_EVENT_VERSION:
            version = raw.decode("ascii", "replace")
    body = None
    if event_type is None or version is None:
        body = _parse(value)
        event_type, version = body.get("event_type"), body.get("event_version")
    if not isinstance(event_type, str) or not event_type:
        raise MalformedEventError("record does not name an event_type")
    try:
        number = int(version)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise MalformedEventError(f"event_version {version!r} is not an integer") from exc
    return event_type, number, body


def _parse(value: bytes) -> dict[str, Any]:
    try:
        body = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEventError(f"record value is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedEventError("record value is not a JSON object")
    return body


def event_type_of(headers: Headers) -> bytes | None:
    """The raw `event_type` header, or None: enough to route a record without decoding it."""
    for name, raw in headers:
        if name == HEADER_EVENT_TYPE:
            return raw
    return None


class Envelope(NamedTuple):
    """The raw envelope headers of one record, read in one pass (each None when absent)."""

    routed_type: bytes | None
    """The first `event_type` header: what routing reads, as `event_type_of`."""
    event_type: bytes | None
    """The last `event_type` header: what decoding reads, as a dict of the headers would."""
    version: bytes | None
    """The last `event_version` header."""
    event_id: bytes | None
    """The first `event_id` header: the one `EventSerializer.serialize` writes, ahead of any
    the publisher added, from the event itself."""


_new_envelope = tuple.__new__


def envelope_headers(headers: Headers) -> Envelope:
    """The envelope headers in one pass over the record's headers."""
    routed = event_type = version = event_id = None
    found = False
    for name, raw in headers:
        if name == HEADER_EVENT_TYPE:
            if not found:
                routed, found = raw, True
            event_type = raw
        elif name == HEADER_EVENT_VERSION:
            version = raw
        elif name == HEADER_EVENT_ID and event_id is None:
            event_id = raw
    return _new_envelope(Envelope, (routed, event_type, version, event_id))  # no Python __new__


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:limit]]
    return "; ".join(parts)
