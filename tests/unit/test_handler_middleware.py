"""Handler middleware and the ids bound around a handler: the order middleware runs in, what it
sees of failures, where it sits relative to the inbox and the retries, and the consumed event's
correlation and causation ids visible inside it and the handler (and gone after)."""

from __future__ import annotations

from typing import Any

from core import correlation
from core.messaging.dispatch import Outcome, RecordDispatcher
from core.messaging.dlq import H_ATTEMPTS, H_ERROR_TYPE, InMemoryDeadLetterSink
from core.messaging.errors import PermanentHandlerError
from core.messaging.event_bus import InMemoryEventBus
from core.messaging.events import BaseEvent
from core.messaging.handlers import HandlerMiddleware, HandlerRegistry
from core.messaging.idempotency import InMemoryIdempotencyStore
from core.messaging.serialization import EventSerializer
from core.messaging.types import EventHandler, MessageContext, Record
from core.resilience.retry import RetryPolicy
from tests.helpers import OrderPlaced, order_registry, placed

NO_WAIT = RetryPolicy(max_attempts=3, initial_delay=0)


def _record(event: OrderPlaced, offset: int = 0) -> Record:
    value, headers = EventSerializer(order_registry()).serialize(event)
    return Record("orders", 0, offset, event.aggregate_id.encode(), value, headers)


def tracing(label: str, log: list[str]) -> HandlerMiddleware:
    """Logs `label>name` before the call, `<label` after it, `!label:Error` on a failure."""
    def middleware(call: EventHandler, name: str) -> EventHandler:
        async def run(event: BaseEvent[Any], ctx: MessageContext) -> None:
            log.append(f"{label}>{name}")
            try:
                await call(event, ctx)
            except Exception as exc:
                log.append(f"!{label}:{type(exc).__name__}")
                raise
            log.append(f"<{label}")
        return run
    return middleware


def dispatcher(handlers: HandlerRegistry, *middleware: HandlerMiddleware,
               **options: Any) -> RecordDispatcher:
    return RecordDispatcher(handlers, InMemoryIdempotencyStore(), InMemoryDeadLetterSink(),
                            retry=NO_WAIT, middleware=middleware, **options)


async def test_the_first_added_runs_outermost_the_consumers_outside_the_registrys() -> None:
    log: list[str] = []
    handlers = HandlerRegistry(order_registry(),
                               middleware=[tracing("r1", log), tracing("r2", log)])

    @handlers.handles(OrderPlaced, name="h")
    async def handle(event: OrderPlaced) -> None:  # a plain handler is wrapped as well
        log.append("handler")

    outcome = await dispatcher(handlers, tracing("c1", log), tracing("c2", log)).process(
        _record(placed("o-1")))
    assert outcome is Outcome.HANDLED
    assert log == ["c1>h", "c2>h", "r1>h", "r2>h", "handler", "<r2", "<r1", "<c2", "<c1"]


async def test_a_failure_passes_through_every_middleware_and_is_retried_then_dead_lettered(
) -> None:
    log: list[str] = []
    handlers = HandlerRegistry(order_registry())

    @handlers.handles(OrderPlaced, name="h")
    async def fail(event: OrderPlaced, ctx: MessageContext) -> None:
        log.append(f"attempt {ctx.attempt}")
        raise ValueError("boom")

    sink = InMemoryDeadLetterSink()
    run = RecordDispatcher(handlers, InMemoryIdempotencyStore(), sink, retry=NO_WAIT,
                           middleware=[tracing("a", log), tracing("b", log)])
    assert await run.process(_record(placed("o-1"))) is Outcome.DEAD_LETTERED
    one_attempt = ["a>h", "b>h", "attempt {}", "!b:ValueError", "!a:ValueError"]
    assert log == [line.format(n) for n in (1, 2, 3) for line in one_attempt]
    ((_, headers),) = sink.records
    assert (H_ERROR_TYPE, b"builtins.ValueError") in headers and (H_ATTEMPTS, b"3") in headers


async def test_what_a_middleware_raises_is_the_handlers_failure_and_what_it_swallows_a_success(
) -> None:
    ran: list[str] = []

    def refusing(call: EventHandler, name: str) -> EventHandler:
        async def run(event: BaseEvent[Any], ctx: MessageContext) -> None:
            raise PermanentHandlerError("refused before the handler")
        return run

    def swallowing(call: EventHandler, name: str) -> EventHandler:
        async def run(event: BaseEvent[Any], ctx: MessageContext) -> None:
            try:
                await call(event, ctx)
            except ValueError:
                ran.append("swallowed")
        return run

    handlers = HandlerRegistry(order_registry())

    @handlers.handles(OrderPlaced, name="h")
    async def fail(event: OrderPlaced) -> None:
        ran.append("handler")
        raise ValueError("boom")

    assert await dispatcher(handlers, refusing).process(_record(placed("o-1"))) \
        is Outcome.DEAD_LETTERED
    assert ran == []  # permanent: no retry, and the handler never ran
    assert await dispatcher(handlers, swallowing).process(_record(placed("o-2"))) \
        is Outcome.HANDLED
    assert ran == ["handler", "swallowed"]


async def test_middleware_runs_inside_the_inbox_a_skipped_redelivery_never_reaches_it() -> None:
    log: list[str] = []
    sessions: list[Any] = []

    class SessionStore:  # a durable store: hands the work its transaction
        def __init__(self) -> None:
            self.done: set[tuple[str, str]] = set()

        async def run_once(self, event_id: str, handler: str, work: Any) -> bool:
            if (event_id, handler) in self.done:
                return False
            await work("the-session")
            self.done.add((event_id, handler))
            return True

    def session_seeing(call: EventHandler, name: str) -> EventHandler:
        async def run(event: BaseEvent[Any], ctx: MessageContext) -> None:
            sessions.append(ctx.session)
            await call(event, ctx)
        return run

    handlers = HandlerRegistry(order_registry())

    @handlers.handles(OrderPlaced, name="h")
    async def handle(event: OrderPlaced) -> None:
        log.append("handler")

    run = RecordDispatcher(handlers, SessionStore(), InMemoryDeadLetterSink(), retry=NO_WAIT,
                           middleware=[session_seeing])
    event = placed("o-1")
    await run.process(_record(event, 0))
    await run.process(_record(event, 1))  # the same event again: the inbox skips it
    assert log == ["handler"]
    assert sessions == ["the-session"]


async def test_the_handled_events_ids_are_bound_inside_middleware_and_handler_and_reset_after(
) -> None:
    seen: list[tuple[str, Any]] = []

    def watching(call: EventHandler, name: str) -> EventHandler:
        async def run(event: BaseEvent[Any], ctx: MessageContext) -> None:
            seen.append(("middleware", correlation.current()))
            await call(event, ctx)
        return run

    handlers = HandlerRegistry(order_registry())

    @handlers.handles(OrderPlaced, name="h")
    async def handle(event: OrderPlaced) -> None:
        seen.append(("handler", correlation.current()))

    run = dispatcher(handlers, watching)
    caused = placed("o-1").model_copy(update={"correlation_id": "req-7"})
    first = placed("o-2")  # names no correlation: it starts one, its own id
    with correlation.bound("outer", "outer-cause"):
        await run.process(_record(caused))
        assert correlation.current() == correlation.Correlation("outer", "outer-cause")
    await run.process(_record(first))
    assert correlation.current() is None
    want_caused = correlation.Correlation("req-7", str(caused.event_id))
    want_first = correlation.Correlation(str(first.event_id), str(first.event_id))
    assert seen == [("middleware", want_caused), ("handler", want_caused),
                    ("middleware", want_first), ("handler", want_first)]


async def test_a_handler_without_middleware_sees_the_ids_too() -> None:
    seen: list[Any] = []
    handlers = HandlerRegistry(order_registry())

    @handlers.handles(OrderPlaced, name="plain")
    async def plain(event: OrderPlaced) -> None:
        seen.append(correlation.current())

    @handlers.handles(OrderPlaced, name="with-ctx")
    async def with_ctx(event: OrderPlaced, ctx: MessageContext) -> None:
        seen.append(correlation.current())

    event = placed("o-1").model_copy(update={"correlation_id": "req-8"})
    await dispatcher(handlers).process(_record(event))
    assert seen == [correlation.Correlation("req-8", str(event.event_id))] * 2


async def test_what_a_handler_publishes_carries_the_handled_events_ids_unless_it_names_its_own(
) -> None:
    bus = InMemoryEventBus(order_registry(), service_name="orders")
    log: list[str] = []

    async def follow_up(event: OrderPlaced) -> None:
        if event.data.seq == 0:
            await bus.publish("audit", placed(event.aggregate_id, seq=1))
            await bus.publish("audit", placed(event.aggregate_id, seq=2).model_copy(
                update={"correlation_id": "mine", "causation_id": "my-cause"}))

    bus.subscribe("orders", follow_up)
    bus2 = InMemoryEventBus(order_registry(), middleware=[tracing("bus", log)])
    bus2.subscribe("orders", follow_up)
    cause = placed("o-1").model_copy(update={"correlation_id": "req-9"})
    await bus.publish("orders", cause)
    serializer = EventSerializer(order_registry())
    got = [(serializer.deserialize(r.value, r.headers), dict(r.headers))
           for r in bus.published["audit"]]
    assert [(e.correlation_id, e.causation_id) for e, _ in got] == [
        ("req-9", str(cause.event_id)), ("mine", "my-cause")]
    # The record headers say the same as the envelope.
    assert [(h["correlation_id"], h["causation_id"]) for _, h in got] == [
        (b"req-9", str(cause.event_id).encode()), (b"mine", b"my-cause")]
    await bus2.publish("orders", placed("o-2", seq=5))
    assert log == [f"bus>{follow_up.__module__}.{follow_up.__qualname__}", "<bus"]
