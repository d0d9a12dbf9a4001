"""`Projection`: a read model declared at import, like a handler registry::

    history = Table("order_history", Base.metadata, Column("order_id", String, primary_key=True),
                    Column("passenger_id", String, index=True), Column("status", String))
    order_history = Projection("order_history", topics=["order.events"], tables=[history])

    @order_history.applies(OrderPlaced)
    async def placed(event: OrderPlaced, view: View) -> None:
        rows = view.table(history)
        await view.session.execute(insert(rows).values(order_id=..., status="pending"))

An apply function writes through `view.session` (the transaction that also moves the
projection's position) and names its tables through `view.table(...)`: the live table when
the projection runs, the fresh one while `python -m core projections rebuild` replays into
it. It must be deterministic in the events it is given (no clock, no calls elsewhere), so a
rebuild arrives at the same rows; it runs once per record, in order per partition.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncSession

from core.messaging.events import BaseEvent
from core.messaging.serialization import EventRegistry
from core.messaging.types import Record
from core.projections.errors import ProjectionSetupError
from core.projections.positions import declared_positions

E = TypeVar("E", bound=BaseEvent[Any])

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class View:
    """What an apply function gets beside its event: the transaction to write through, the
    record behind the event, and the projection's tables as this run names them."""

    session: AsyncSession
    record: Record
    tables: Mapping[Table, Table] = field(default_factory=dict)
    """The projection's declared tables to the ones this run writes (the same when live)."""

    def table(self, declared: Table) -> Table:
        """The table to read and write for `declared` (one of the projection's `tables`)."""
        try:
            return self.tables[declared]
        except KeyError:
            raise ProjectionSetupError(
                f"{declared.name} is not one of this projection's tables: list it in "
                "Projection(tables=...)") from None


Apply = Callable[[Any, View], Awaitable[None]]
"""An apply function: `async def fn(event, view) -> None`."""


class Projection:
    """A named read model: the topics it reads, the tables it owns, and one apply function
    per event type. Fill it at import, then only read.

    Contract with its runner (`ProjectionRunner`): records are applied in order per
    partition, each exactly once against the position stored with the rows; an event type
    with no apply function here is skipped (its position still moves); an event of an older
    version arrives upcast through `events` (the service's registry, if it has upcasters).
    """

    def __init__(self, name: str, *, topics: Iterable[str], tables: Iterable[Table],
                 events: EventRegistry | None = None) -> None:
        if not _NAME.fullmatch(name):
            raise ProjectionSetupError(
                f"projection name {name!r}: 1 to 63 of a-z, 0-9 and '_', starting with a letter")
        self.name = name
        self.topics = tuple(dict.fromkeys(topics))
        self.tables = tuple(dict.fromkeys(tables))
        if not self.topics:
            raise ProjectionSetupError(f"projection {name} reads no topic")
        if not self.tables:
            raise ProjectionSetupError(f"projection {name} owns no table")
        owners = {id(t.metadata) for t in self.tables}
        if len(owners) != 1:
            raise ProjectionSetupError(f"projection {name}: its tables are in different "
                                       "MetaData; a projection lives in one service's database")
        self.events = events or EventRegistry()
        self._apply: dict[str, Apply] = {}

    @property
    def metadata(self) -> MetaData:
        """The service metadata its tables (and the positions table) are declared in."""
        return self.tables[0].metadata

    def applies(self, event_cls: type[E]) -> Callable[[Callable[[E, View], Awaitable[None]]],
                                                      Callable[[E, View], Awaitable[None]]]:
        """Decorator: apply the function to every `event_cls` event (any version, upcast)."""

        def decorator(fn: Callable[[E, View], Awaitable[None]]) -> Callable[[E, View],
                                                                             Awaitable[None]]:
            self.add(event_cls, fn)
            return fn

        return decorator

    def add(self, event_cls: type[BaseEvent[Any]], fn: Apply) -> None:
        if event_cls.EVENT_TYPE in self._apply:
            raise ProjectionSetupError(
                f"projection {self.name} already applies {event_cls.EVENT_TYPE}")
        self.events.register(event_cls)
        self._apply[event_cls.EVENT_TYPE] = fn

    def apply_for(self, event_type: str) -> Apply | None:
        return self._apply.get(event_type)

    def applies_type(self, event_type: bytes) -> bool:
        """Whether records of this (raw header) type are applied here: others are skipped
        without being decoded."""
        try:
            return event_type.decode() in self._apply
        except UnicodeDecodeError:
            return False

    @property
    def event_types(self) -> list[str]:
        return sorted(self._apply)

    def check(self, metadata: MetaData | None = None) -> None:
        """Raise `ProjectionSetupError` unless its tables and the positions table are in
        `metadata` (the service's; default: its tables' own)."""
        metadata = metadata if metadata is not None else self.metadata
        declared_positions(metadata)
        missing = [t.name for t in self.tables if t.metadata is not metadata]
        if missing:
            raise ProjectionSetupError(f"projection {self.name}: tables {missing} are not in "
                                       "the service's metadata, so no migration creates them")

    def __repr__(self) -> str:
        return f"<Projection {self.name} topics={list(self.topics)}>"
