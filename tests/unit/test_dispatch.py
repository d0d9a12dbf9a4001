"""RecordDispatcher's policy where the in-memory bus does not reach: sessions from the store,
handlers that run on every delivery, the waits while the store is down, a failing DLQ."""

from typing import Any
from unittest.mock import patch

from core.messaging.dispatch import Outcome, RecordDispatcher
from core.messaging.dlq import H_ATTEMPTS, H_GROUP, InMemoryDeadLetterSink
from core.messaging.errors import StoreUnavailableError
from core.messaging.handlers import HandlerRegistry
from core.messaging.idempotency import InMemoryIdempotencyStore
from core.messaging.serialization import EventSerializer
from core.messaging.types import Headers, MessageContext, Record
from core.resilience.retry import RetryPolicy
from tests.helpers import OrderPlaced, OrderPlacedV1, order_registry, placed

NO_WAIT = RetryPolicy(max_attempts=3, initial_delay=0)


def _record(event: OrderPlaced, offset: int = 0) -> Record:
    value, headers = EventSerializer(order_registry()).serialize(event)
    return Record("orders", 0, offset, event.aggregate_id.encode(), value, headers)


def _dispatcher(handlers: HandlerRegistry, store: Any = None, **kwargs: Any) -> RecordDispatcher:
    return RecordDispatcher(handlers, store or InMemoryIdempotencyStore(),
                            InMemoryDeadLetterSink(), **kwargs)


async def test_distinct_events_each_run_once_and_a_duplicate_is_skipped() -> None:
    handlers, seen = HandlerRegistry(order_registry()), []

    @handlers.handles(OrderPlaced)
    async def record(event: OrderPlaced) -> None:
        seen.append(event.aggregate_id)

    dispatcher = _dispatcher(handlers)
    first, second = placed("o-1"), placed("o-2")
    for offset, event in enumerate([first, second, first]):
        await dispatcher.process(_record(event, offset))
    assert seen == ["o-1", "o-2"]


async def test_handler_sees_the_store_transaction_as_ctx_session() -> None:
    class SessionStore:  # a durable store hands the work its transaction
        async def run_once(self, event_id: str, handler: str, work: Any) -> bool:
            await work("the-session")
            return True

    handlers, sessions = HandlerRegistry(order_registry()), []

    @handlers.handles(OrderPlaced)
    async def write(event: OrderPlaced, ctx: MessageContext) -> None:
        sessions.append((ctx.session, ctx.attempt, ctx.consumer_group))

    await _dispatcher(handlers, SessionStore(), consumer_group="billing").process(
        _record(placed("o-1")))
    await _dispatcher(handlers).process(_record(placed("o-2")))
    assert sessions == [("the-session", 1, "billing"), (None, 1, "")]


async def test_a_handler_registered_with_once_false_runs_on_every_delivery() -> None:
    handlers, calls = HandlerRegistry(order_registry()), []

    async def respond(event: OrderPlaced, ctx: MessageContext) -> None:
        calls.append((event.aggregate_id, ctx.record.offset))

    handlers.add(OrderPlaced, respond, once=False)
    dispatcher, event = _dispatcher(handlers), placed("o-1")
    await dispatcher.process(_record(event, 0))
    await dispatcher.process(_record(event, 1))
    assert calls == [("o-1", 0), ("o-1", 1)]


async def test_another_teams_record_is_skipped_whatever_its_body() -> None:
    handlers = HandlerRegistry(order_registry())
    handlers.add(OrderPlaced, _never)
    sink = InMemoryDeadLetterSink()
    dispatcher = RecordDispatcher(handlers, InMemoryIdempotencyStore(), sink)
    avro: Headers = [("event_type", b"billing.invoiced")]  # their producer sets no version
    outcome = await dispatcher.process(Record("orders", 0, 0, b"k", b"\x00\x02avro", avro))
    assert outcome is Outcome.NO_HANDLER and not sink.records


async def test_a_record_typed_only_by_its_headers_is_handled() -> None:
    handlers, seen = HandlerRegistry(order_registry()), []

    @handlers.handles(OrderPlaced)
    async def record(event: OrderPlaced) -> None:
        seen.append(event.data.order_id)

    event = placed("o-1")
    _, headers = EventSerializer(order_registry()).serialize(event)
    body = event.model_dump(mode="json", exclude={"event_type", "event_version"})
    bare = Record("orders", 0, 0, b"o-1", _json(body), headers)
    assert await _dispatcher(handlers).process(bare) is Outcome.HANDLED
    assert seen == ["o-1"]


async def test_poison_is_dead_lettered_after_one_attempt() -> None:
    handlers = HandlerRegistry(order_registry())
    handlers.add(OrderPlaced, _never)
    sink = InMemoryDeadLetterSink()
    dispatcher = RecordDispatcher(handlers, InMemoryIdempotencyStore(), sink)
    await dispatcher.process(Record("orders", 0, 0, b"k", b"{not json", []))
    (_, headers), = sink.records
    assert dict(headers)[H_ATTEMPTS] == b"1"


async def test_a_dead_letter_queue_that_fails_is_retried_until_it_takes_the_record() -> None:
    class FlakySink(InMemoryDeadLetterSink):
        def __init__(self) -> None:
            super().__init__()
            self.failures = 2

        async def send(self, record: Record, headers: Headers) -> None:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("dlq topic unavailable")
            await super().send(record, headers)

    handlers = HandlerRegistry(order_registry())
    handlers.add(OrderPlaced, _failing)
    sink = FlakySink()
    dispatcher = RecordDispatcher(handlers, InMemoryIdempotencyStore(), sink, retry=NO_WAIT,
                                  consumer_group="billing")
    with patch("core.messaging.dispatch.DLQ_RETRY_DELAY", 0):
        outcome = await dispatcher.process(_record(placed("o-1")))
    assert outcome is Outcome.DEAD_LETTERED and sink.failures == 0
    (_, headers), = sink.records
    assert dict(headers)[H_GROUP] == b"billing"


async def test_waits_for_the_store_grow_and_start_over_after_the_handler_ran() -> None:
    class Store:  # down twice, then up for one (failing) run, then down once more
        def __init__(self) -> None:
            self.script = ["down", "down", "up", "down", "up"]

        async def run_once(self, event_id: str, handler: str, work: Any) -> bool:
            if self.script.pop(0) == "down":
                raise StoreUnavailableError("no free connection")
            await work(None)
            return True

    failures = ["payment down"]

    async def handler(event: OrderPlaced) -> None:
        if failures:
            raise RuntimeError(failures.pop())

    handlers = HandlerRegistry(order_registry())
    handlers.add(OrderPlaced, handler)
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)

    dispatcher = _dispatcher(handlers, Store(),
                             retry=RetryPolicy(max_attempts=3, initial_delay=7, max_delay=7,
                                               jitter=False))
    store_backoff = RetryPolicy(max_attempts=100, initial_delay=1, max_delay=60, jitter=False)
    with (patch("core.messaging.dispatch.STORE_RETRY", store_backoff),
          patch("core.messaging.dispatch.asyncio.sleep", sleep)):
        assert await dispatcher.process(_record(placed("o-1"))) is Outcome.HANDLED
    assert waits == [1, 2, 7, 1]


async def _never(event: OrderPlaced) -> None:
    raise AssertionError("never reached")


async def _failing(event: OrderPlaced) -> None:
    raise RuntimeError("always fails")


def _json(body: dict[str, Any]) -> bytes:
    import json

    return json.dumps(body).encode()


async def test_the_idempotency_key_is_the_event_id_whether_read_from_header_or_body() -> None:
    class KeyStore(InMemoryIdempotencyStore):
        keys: list[str] = []

        async def run_once(self, event_id: str, handler: str, work: Any) -> bool:
            self.keys.append(event_id)
            return await super().run_once(event_id, handler, work)

    handlers = HandlerRegistry(order_registry())
    handlers.add(OrderPlaced, _ignore)
    store = KeyStore()
    event = placed("o-1")
    written = _record(event)
    no_id = [(k, v) for k, v in written.headers if k != "event_id"]
    garbage = [*no_id, ("event_id", b"\xff" * 36)]
    short = [*no_id, ("event_id", b"not-an-id")]
    dispatcher = _dispatcher(handlers, store)
    outcomes = [await dispatcher.process(Record("orders", 0, i, None, written.value, headers))
                for i, headers in enumerate([written.headers, no_id, garbage, short])]
    assert outcomes == [Outcome.HANDLED] * 4
    assert store.keys == [str(event.event_id)] * 4


async def _ignore(event: OrderPlaced) -> None:
    return None


async def test_each_event_only_handler_is_its_own_idempotency_entry() -> None:
    """Handlers that take only the event skip the context, not the store: each runs once per
    event under its own name, so two of them on one event both run, once each."""
    handlers, seen = HandlerRegistry(order_registry()), []

    @handlers.handles(OrderPlaced)
    async def bill(event: OrderPlaced) -> None:
        seen.append(("bill", event.aggregate_id))

    @handlers.handles(OrderPlaced)
    async def ship(event: OrderPlaced) -> None:
        seen.append(("ship", event.aggregate_id))

    store = InMemoryIdempotencyStore()
    dispatcher = _dispatcher(handlers, store)
    record = _record(placed("o-1"))
    assert await dispatcher.process(record) is Outcome.HANDLED
    assert await dispatcher.process(record) is Outcome.HANDLED  # redelivered: both skip
    assert sorted(seen) == [("bill", "o-1"), ("ship", "o-1")]


async def test_context_handlers_are_each_their_own_idempotency_entry_too() -> None:
    handlers, seen = HandlerRegistry(order_registry()), []

    @handlers.handles(OrderPlaced)
    async def bill(event: OrderPlaced, ctx: MessageContext) -> None:
        seen.append("bill")

    @handlers.handles(OrderPlaced)
    async def ship(event: OrderPlaced, ctx: MessageContext) -> None:
        seen.append("ship")

    dispatcher = _dispatcher(handlers)
    record = _record(placed("o-1"))
    await dispatcher.process(record)
    await dispatcher.process(record)
    assert sorted(seen) == ["bill", "ship"]


async def test_an_event_only_handler_run_on_every_delivery_gets_the_event() -> None:
    handlers, seen = HandlerRegistry(order_registry()), []

    async def echo(event: OrderPlaced) -> None:
        seen.append(event.aggregate_id)

    handlers.add(OrderPlaced, echo, once=False)
    dispatcher = _dispatcher(handlers)
    for _ in range(2):
        assert await dispatcher.process(_record(placed("o-1"))) is Outcome.HANDLED
    assert seen == ["o-1", "o-1"]


async def test_a_known_type_in_a_version_nobody_handles_is_not_ours() -> None:
    handlers, seen = HandlerRegistry(order_registry()), []

    @handlers.handles(OrderPlacedV1)  # handled in v1 only; v2 records decode, find nobody
    async def old(event: OrderPlacedV1) -> None:
        seen.append(event)

    assert await _dispatcher(handlers).process(_record(placed("o-1"))) is Outcome.NO_HANDLER
    assert seen == []


async def test_a_handler_for_every_event_runs_once_per_event() -> None:
    seen: list[str] = []

    async def audit(event: OrderPlaced) -> None:
        seen.append(event.aggregate_id)

    dispatcher = _dispatcher(HandlerRegistry.for_all(order_registry(), audit))
    record = _record(placed("o-1"))
    await dispatcher.process(record)
    await dispatcher.process(record)  # redelivered
    assert seen == ["o-1"]


async def test_an_event_only_function_wrapped_for_a_context_gets_the_event() -> None:
    from core.messaging.handlers import as_event_handler

    seen: list[OrderPlaced] = []

    async def only_event(event: OrderPlaced) -> None:
        seen.append(event)

    event = placed("o-1")
    await as_event_handler(only_event)(event, MessageContext(_record(event), 1, "g"))
    assert seen == [event]
