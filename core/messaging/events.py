"""Typed, versioned events.

An event class names its type and version as class constants and carries a typed `data`
payload. The envelope fields (id, time, origin, correlation) are the same for every event, so
tools can read any record without knowing its payload::

    class UserRegisteredData(BaseModel):
        user_id: str
        email: str

    class UserRegistered(DomainEvent[UserRegisteredData]):
        EVENT_TYPE = "user.registered"
        EVENT_VERSION = 2
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID, uuid4

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    computed_field,
    field_serializer,
)

from core import correlation

DataT = TypeVar("DataT")


def _now() -> datetime:
    return datetime.now(UTC)


class BaseEvent(BaseModel, Generic[DataT]):
    """An immutable fact with an envelope and a typed payload.

    `event_type` and `event_version` come from the class, so an instance can never claim a
    shape it does not have. `correlation_id` ties together everything one request caused;
    `causation_id` is the id of the event or command that directly caused this one.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    EVENT_TYPE: ClassVar[str] = ""
    EVENT_VERSION: ClassVar[int] = 1

    event_id: UUID = Field(default_factory=uuid4)
    timestamp: datetime = Field(default_factory=_now)
    service_name: str = ""
    correlation_id: str | None = None
    causation_id: str | None = None
    data: DataT

    @field_serializer("service_name")
    def _origin(self, value: str, info: SerializationInfo) -> str:
        """An event that does not name its origin gets the publishing service's name (the
        serializer passes it as context), so no caller has to remember to set it."""
        if value or not info.context:
            return value
        return str(info.context.get("service_name", ""))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def event_type(self) -> str:
        return type(self).EVENT_TYPE

    @computed_field  # type: ignore[prop-decorator]
    @property
    def event_version(self) -> int:
        return type(self).EVENT_VERSION

    def partition_key(self) -> str | None:
        """The Kafka key that keeps related events in order; None spreads them."""
        return None

    def caused(self, event_cls: type[E], data: Any, **fields: Any) -> E:
        """A follow-up event that inherits this one's correlation and names it as its cause."""
        return event_cls(
            data=data,
            correlation_id=self.correlation_id or str(self.event_id),
            causation_id=str(self.event_id),
            **fields,
        )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.EVENT_VERSION < 1:
            raise TypeError(f"{cls.__name__}.EVENT_VERSION must be >= 1")


E = TypeVar("E", bound=BaseEvent[Any])


def correlated(event: E) -> E:
    """`event` with the current correlation and causation ids (`core.correlation`) filled in
    where it names none; its own values win. The outbox writer and the buses call it before
    serializing, so the envelope and the record headers carry the same ids."""
    ids = correlation.current()
    if ids is None:
        return event
    fill: dict[str, str] = {}
    if event.correlation_id is None:
        fill["correlation_id"] = ids.correlation_id
    if event.causation_id is None and ids.causation_id is not None:
        fill["causation_id"] = ids.causation_id
    return event.model_copy(update=fill) if fill else event


class DomainEvent(BaseEvent[DataT], Generic[DataT]):
    """Something that happened to one aggregate inside a service; keyed by that aggregate.

    `aggregate_id` is part of the envelope on the wire (a top-level field beside `data`); a
    record without it does not decode as this event.
    """

    aggregate_id: str

    def partition_key(self) -> str | None:
        return self.aggregate_id


class IntegrationEvent(BaseEvent[DataT], Generic[DataT]):
    """A public contract between services: change it only by adding a new version."""

    key: str | None = None

    def partition_key(self) -> str | None:
        return self.key
