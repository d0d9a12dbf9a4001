"""`Aggregate`: state rebuilt from its events; commands record new ones.

An aggregate is a pydantic model (so its state snapshots as JSON) whose fields all have
defaults: the state before its first event. A method per event type, marked `@applies`,
moves the state on; commands check the rules, then `record` the event, which applies it at
once and keeps it pending until the repository appends it::

    class Order(Aggregate):
        status: str = "new"
        driver_id: str | None = None

        @classmethod
        def place(cls, order_id: str, passenger_id: str) -> Order:
            order = cls(id=order_id)
            order.record(OrderPlaced(aggregate_id=order_id, data=...))
            return order

        def reserve(self, driver_id: str) -> None:
            if self.status != "placed":
                raise OrderNotPending(self.id)
            self.record(DriverReserved(aggregate_id=self.id, data=...))

        @applies(OrderPlaced)
        def _placed(self, event: OrderPlaced) -> None:
            self.status = "placed"

An `@applies` method only changes state: it never checks a rule (the event happened) and
never records. Its dispatch is by the event's exact class, resolved once per aggregate class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr

from core.event_sourcing.errors import UnhandledEventError
from core.messaging import BaseEvent, DomainEvent

F = TypeVar("F", bound=Callable[..., None])
_APPLIES = "__applies_event__"


def applies(event_cls: type[BaseEvent[Any]]) -> Callable[[F], F]:
    """Mark an `Aggregate` method as the one that applies `event_cls` to the state."""

    def mark(method: F) -> F:
        setattr(method, _APPLIES, event_cls)
        return method

    return mark


class Aggregate(BaseModel):
    """Base of event-sourced aggregates: `id`, `version` (events applied, pending ones
    included), per-type `@applies` methods and the events recorded since the last save.

    `CATEGORY` prefixes the stream id (`order-<id>`); it defaults to the class name,
    lower-cased. Bump `SNAPSHOT_VERSION` when the fields change shape: older snapshots are
    then ignored and the aggregate is rebuilt from its events.

    Not safe to share between tasks: load one per unit of work.
    """

    model_config = ConfigDict(extra="forbid")

    CATEGORY: ClassVar[str] = ""
    SNAPSHOT_VERSION: ClassVar[int] = 1
    _appliers: ClassVar[dict[type[BaseEvent[Any]], Callable[[Any, Any], None]]] = {}

    id: str
    version: int = 0
    _pending: list[BaseEvent[Any]] = PrivateAttr(default_factory=list)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "CATEGORY" not in cls.__dict__:
            cls.CATEGORY = cls.__name__.lower()
        appliers: dict[type[BaseEvent[Any]], Callable[[Any, Any], None]] = {}
        for klass in reversed(cls.__mro__):
            own: dict[type[BaseEvent[Any]], str] = {}
            for name, value in vars(klass).items():
                event_cls = getattr(value, _APPLIES, None)
                if event_cls is None:
                    continue
                if event_cls in own:
                    raise TypeError(f"{klass.__name__}: {own[event_cls]} and {name} both "
                                    f"apply {event_cls.__name__}")
                own[event_cls] = name
                appliers[event_cls] = value  # a subclass's method overrides its base's
        cls._appliers = appliers

    @property
    def pending(self) -> tuple[BaseEvent[Any], ...]:
        """Events recorded since the aggregate was loaded or last saved, oldest first."""
        return tuple(self._pending)

    def apply(self, event: BaseEvent[Any]) -> None:
        """Move the state on by one stored event (a replay); raises `UnhandledEventError`
        when no `@applies` method takes its type."""
        applier = self._appliers.get(type(event))
        if applier is None:
            raise UnhandledEventError(
                f"{type(self).__name__} has no @applies method for {type(event).__name__}")
        applier(self, event)
        self.version += 1

    def record(self, event: BaseEvent[Any]) -> None:
        """Apply a new event and keep it for the next save. A `DomainEvent` must name this
        aggregate."""
        if isinstance(event, DomainEvent) and event.aggregate_id != self.id:
            raise ValueError(f"{type(event).__name__} names aggregate {event.aggregate_id!r}, "
                             f"not {self.id!r}")
        self.apply(event)
        self._pending.append(event)

    def mark_saved(self) -> None:
        """Forget the pending events: the repository appended them."""
        self._pending.clear()
