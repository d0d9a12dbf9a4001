"""Which function handles which event: a registry filled by a decorator at import time::

    handlers = HandlerRegistry()

    @handlers.handles(UserRegistered)
    async def send_welcome(event: UserRegistered, ctx: MessageContext) -> None: ...

A handler is named (by default `module.qualname`); the name is half of the idempotency key,
so renaming a handler makes it run again for events it has already seen.

Middleware wraps every handler run (Watermill's `HandlerMiddleware`): a function given the
next handler and the handler's name, returning a handler that calls it. It can act before and
after, see and translate exceptions, or not call on. `HandlerRegistry(middleware=[...])` wraps
the registry's handlers, `EventConsumer(middleware=[...])` (and the buses) every handler it
dispatches to, outside the registry's; in each list the first added runs outermost::

    def timed(call: EventHandler, name: str) -> EventHandler:
        async def run(event: BaseEvent[Any], ctx: MessageContext) -> None:
            started = time.perf_counter()
            try:
                await call(event, ctx)
            finally:
                log.info("%s took %.3fs", name, time.perf_counter() - started)
        return run

Where it runs (see `dispatch.py`): once per attempt of a handler that runs, inside the inbox
transaction (`ctx.session` is the handler's; a `once=False` handler has none) and with the
consumed event's ids bound in `core.correlation`; a redelivery the inbox skips never
reaches it. What it raises is the
handler's failure (retried, then dead-lettered); what it swallows is a success, and the inbox
row commits.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from core.messaging.events import BaseEvent
from core.messaging.serialization import EventRegistry
from core.messaging.types import EventHandler, MessageContext

E = TypeVar("E", bound=BaseEvent[Any])
F = TypeVar("F", bound=Callable[..., Awaitable[None]])

HandlerMiddleware = Callable[[EventHandler, str], EventHandler]
"""Wraps the next handler (and learns the handler's name, once): see the module doc."""


@dataclass(frozen=True, slots=True)
class NamedHandler:
    name: str
    fn: EventHandler
    once: bool = True
    """Run through the idempotency store (at most once per event). False: run on every
    delivery, for handlers whose effect is wanted each time (request-reply responders)."""
    plain: Callable[[BaseEvent[Any]], Awaitable[None]] | None = None
    """The function itself when it takes only the event: the dispatcher calls it directly,
    with no `MessageContext` built and no wrapper coroutine per record (the hot path)."""

    @classmethod
    def of(cls, name: str, fn: Callable[..., Awaitable[None]], once: bool = True) -> NamedHandler:
        """A handler for `fn`, which takes (event) or (event, ctx); see `as_event_handler`."""
        wrapped = as_event_handler(fn)
        return cls(name, wrapped, once, fn if wrapped is not fn else None)


def as_event_handler(fn: Callable[..., Awaitable[None]]) -> EventHandler:
    """Accept `async def h(event)` as well as `async def h(event, ctx)`, and objects whose
    `__call__` is such a coroutine function; decided once here."""
    if not (inspect.iscoroutinefunction(fn)
            or inspect.iscoroutinefunction(getattr(fn, "__call__", None))):  # noqa: B004
        raise TypeError(f"handler {fn!r} must be an async function (or an object with an "
                        "async __call__) taking (event) or (event, ctx)")
    params = [
        p for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) >= 2:
        return fn
    if len(params) == 1:

        async def without_context(event: BaseEvent[Any], ctx: MessageContext) -> None:
            await fn(event)

        return without_context
    raise TypeError(f"handler {fn!r} must take (event) or (event, ctx)")


def reply_classes(fn: Callable[..., Any]) -> tuple[type[BaseEvent[Any]], ...]:
    """The event classes `fn`'s return annotation names (`-> Contact`, `-> A | B | None`);
    none when it names none or cannot be resolved (documentation only: nothing depends on it).
    """
    try:
        returned = typing.get_type_hints(fn).get("return")
    except Exception:  # an unresolvable forward reference: the document just says less
        return ()
    candidates = typing.get_args(returned) or (returned,)
    return tuple(c for c in candidates if isinstance(c, type) and issubclass(c, BaseEvent))


def handler_name(fn: Callable[..., Any]) -> str:
    """`module.qualname` of a function, or of the class of a callable object."""
    named = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{named.__module__}.{named.__qualname__}"


class HandlerRegistry:
    """Handlers per (event type, version); registers each event class in `events` too, so the
    consumer can decode what its handlers ask for. Fill it at start-up, then only read.
    `middleware` wraps each of its handlers, the first outermost (see the module doc)."""

    def __init__(self, events: EventRegistry | None = None, *,
                 middleware: Sequence[HandlerMiddleware] = ()) -> None:
        self.events = events or EventRegistry()
        self.middleware = tuple(middleware)
        self._handlers: dict[tuple[str, int], list[NamedHandler]] = {}
        self._every: list[NamedHandler] = []
        self._types: set[bytes] = set()
        self.replies: dict[type[BaseEvent[Any]], tuple[type[BaseEvent[Any]], ...]] = {}
        """Event class -> the events its handler answers with, to the topic in the record's
        `reply_to` header (request-reply responders, saga participants): what the AsyncAPI
        document says; nothing runs on it."""

    @classmethod
    def for_all(cls, events: EventRegistry, fn: Callable[..., Awaitable[None]]) -> HandlerRegistry:
        """A registry that runs one function for every event `events` can decode, including
        types registered after this call."""
        registry = cls(events)
        registry._every.append(NamedHandler.of(handler_name(fn), fn))
        return registry

    def handles(
        self, event_cls: type[E], *, name: str | None = None, once: bool = True
    ) -> Callable[[F], F]:
        """Decorator: run the function for every `event_cls` event (older versions upcast);
        `once=False` runs it on every delivery, past the idempotency store."""

        def decorator(fn: F) -> F:
            self.add(event_cls, fn, name=name, once=once)
            return fn

        return decorator

    def add(
        self,
        event_cls: type[BaseEvent[Any]],
        fn: Callable[..., Awaitable[None]],
        *,
        name: str | None = None,
        once: bool = True,
    ) -> None:
        self.events.register(event_cls)
        named = NamedHandler.of(name or handler_name(fn), fn, once)
        bucket = self._handlers.setdefault((event_cls.EVENT_TYPE, event_cls.EVENT_VERSION), [])
        if any(h.name == named.name for h in bucket):
            raise ValueError(f"handler {named.name!r} is already registered for {event_cls}")
        bucket.append(named)
        self._types.add(event_cls.EVENT_TYPE.encode())

    def handled(self) -> list[tuple[str, int]]:
        """The (event type, version) pairs with a handler here (the contract checks read it)."""
        return sorted(self._handlers)

    def handlers_for(self, event: BaseEvent[Any]) -> list[NamedHandler]:
        found = self._handlers.get((event.EVENT_TYPE, event.EVENT_VERSION))
        if not self._every:
            return found or []
        return [*self._every, *(found or [])]

    def may_handle(self, event_type: bytes) -> bool:
        """Whether an event of this (raw header) type could have a handler here; False lets a
        consumer skip another team's events on a shared topic without decoding them."""
        return bool(self._every) or event_type in self._types

    def __len__(self) -> int:
        return len(self._every) + sum(len(b) for b in self._handlers.values())
