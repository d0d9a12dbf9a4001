"""Handler semantics through the in-memory bus: the same dispatcher the Kafka consumer uses."""

import json
from typing import Any
from unittest.mock import patch

import pytest
from pydantic import BaseModel

from core.messaging.dispatch import Outcome
from core.messaging.dlq import H_ATTEMPTS, H_ERROR, H_ERROR_TYPE, H_HANDLERS
from core.messaging.errors import PermanentHandlerError, StoreUnavailableError
from core.messaging.event_bus import InMemoryEventBus
from core.messaging.events import DomainEvent
from core.messaging.handlers import HandlerRegistry
from core.messaging.idempotency import InMemoryIdempotencyStore
from core.messaging.types import MessageContext, Record
from core.resilience.retry import RetryPolicy
from tests.helpers import (
    OrderPlaced,
    OrderPlacedV1,
    OrderPlacedV1Data,
    order_registry,
    placed,
)


class ShippedData(BaseModel):
    n: int


class OrderShipped(DomainEvent[ShippedData]):
    EVENT_TYPE = "order.shipped"


def _bus(max_attempts: int = 3) -> InMemoryEventBus:
    return InMemoryEventBus(
        order_registry(), retry=RetryPolicy(max_attempts=max_attempts, initial_delay=0)
    )


async def test_handler_sees_event_and_context() -> None:
    bus, seen = _bus(), []
    handlers = HandlerRegistry(bus.events)

    @handlers.handles(OrderPlaced)
    async def record(event: OrderPlaced, ctx: MessageContext) -> None:
        seen.append((event.data.order_id, ctx.attempt, ctx.record.key))

    bus.subscribe("orders", handlers)
    await bus.publish("orders", placed("o-1"))
    assert seen == [("o-1", 1, b"o-1")]


async def test_same_event_twice_has_its_effect_once() -> None:
    bus, effects = _bus(), []
    handlers = HandlerRegistry(bus.events)

    @handlers.handles(OrderPlaced)
    async def count(event: OrderPlaced) -> None:
        effects.append(event.event_id)

    bus.subscribe("orders", handlers)
    event = placed("o-1")
    await bus.publish("orders", event)
    await bus.publish("orders", event)
    assert len(effects) == 1


async def test_failing_handler_is_retried_then_dead_lettered_with_reasons() -> None:
    bus, attempts = _bus(max_attempts=3), []
    handlers = HandlerRegistry(bus.events)

    @handlers.handles(OrderPlaced)
    async def broken(event: OrderPlaced, ctx: MessageContext) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("payment service down")

    bus.subscribe("orders", handlers)
    await bus.publish("orders", placed("o-1"))
    assert attempts == [1, 2, 3]
    (record, headers), = bus.dead_letters.records
    got = {k: v.decode() for k, v in headers}
    assert got[H_ERROR] == "payment service down"
    assert got[H_ERROR_TYPE] == "builtins.RuntimeError"
    assert got[H_ATTEMPTS] == "3"
    assert got[H_HANDLERS].endswith("broken")
    assert record.key == b"o-1"


async def test_permanent_error_skips_retries() -> None:
    bus, attempts = _bus(max_attempts=5), []
    handlers = HandlerRegistry(bus.events)

    @handlers.handles(OrderPlaced)
    async def reject(event: OrderPlaced) -> None:
        attempts.append(1)
        raise PermanentHandlerError("order is for a closed account")

    from core.messaging.dispatch import DEFAULT_RETRY

    bus = InMemoryEventBus(order_registry(), retry=DEFAULT_RETRY)
    bus.subscribe("orders", handlers)
    await bus.publish("orders", placed("o-1"))
    assert attempts == [1]
    assert len(bus.dead_letters.records) == 1


async def test_poison_record_is_dead_lettered_and_next_one_handled() -> None:
    bus, seen = _bus(), []
    handlers = HandlerRegistry(bus.events)

    @handlers.handles(OrderPlaced)
    async def record(event: OrderPlaced) -> None:
        seen.append(event.aggregate_id)

    bus.subscribe("orders", handlers)
    await bus.deliver(Record("orders", 0, 0, b"k", b"{not json", []))
    await bus.publish("orders", placed("o-2"))
    assert seen == ["o-2"]
    (_, headers), = bus.dead_letters.records
    assert "not JSON" in dict(headers)[H_ERROR].decode()


async def test_old_version_reaches_the_new_handler() -> None:
    bus, seen = _bus(), []
    handlers = HandlerRegistry(bus.events)

    @handlers.handles(OrderPlaced)
    async def record(event: OrderPlaced) -> None:
        seen.append(event.data.amount_cents)

    bus.subscribe("orders", handlers)
    bus.events.register(OrderPlacedV1)  # lets this test publish the old shape
    await bus.publish("orders", OrderPlacedV1(aggregate_id="o", data=OrderPlacedV1Data(
        order_id="o", amount=3)))
    assert seen == [300]


async def test_plain_function_subscriber_gets_every_known_event() -> None:
    bus, seen = _bus(), []

    async def audit(event: OrderPlaced) -> None:
        seen.append(event.event_type)

    bus.subscribe("orders", audit)
    await bus.publish("orders", placed("o-1"))
    assert seen == ["order.placed"]


def test_handler_with_wrong_signature_is_rejected() -> None:
    handlers = HandlerRegistry(order_registry())

    async def nothing() -> None:
        return None

    with pytest.raises(TypeError, match="must take"):
        handlers.add(OrderPlaced, nothing)


async def test_event_types_nobody_here_handles_are_skipped_not_dead_lettered() -> None:
    bus, seen = _bus(), []
    handlers = HandlerRegistry(bus.events)

    @handlers.handles(OrderPlaced)
    async def record(event: OrderPlaced) -> None:
        seen.append(event.aggregate_id)

    bus.subscribe("orders", handlers)
    foreign = b'{"event_type": "billing.invoiced", "event_version": 1, "data": {}}'
    outcomes = await bus.deliver(Record("orders", 0, 0, b"k", foreign,
                                        [("event_type", b"billing.invoiced")]))
    outcomes += await bus.deliver(Record("orders", 0, 1, b"k", foreign, []))  # body only
    assert outcomes == [Outcome.NO_HANDLER, Outcome.NO_HANDLER]
    assert not bus.dead_letters.records
    await bus.publish("orders", placed("o-1"))
    assert seen == ["o-1"]


async def test_undecodable_records_are_poison_whatever_raised() -> None:
    bus = _bus()

    async def record(event: OrderPlaced) -> None:
        raise AssertionError("never reached")

    bus.subscribe("orders", record)

    @bus.events.upcaster("order.placed", from_version=0)
    def buggy(data: dict[str, object]) -> dict[str, object]:
        return {"x": data["missing"]}

    v0 = b'{"event_type": "order.placed", "event_version": 0, "aggregate_id": "k", "data": {}}'
    null_header = [("event_type", b"order.placed"), ("event_version", None)]
    outcomes = [
        *await bus.deliver(Record("orders", 0, 0, b"k", v0, [])),
        *await bus.deliver(Record("orders", 0, 1, b"k", b"{}", null_header)),  # type: ignore[list-item]
    ]
    assert outcomes == [Outcome.DEAD_LETTERED, Outcome.DEAD_LETTERED]
    errors = [dict(h)[H_ERROR].decode() for _, h in bus.dead_letters.records]
    assert "KeyError" in errors[0] and "upcasting" in errors[0]


async def test_a_function_subscriber_gets_event_types_registered_after_it() -> None:
    bus, seen = _bus(), []

    async def audit(event: Any) -> None:
        seen.append(event.event_type)

    bus.subscribe("orders", audit)
    bus.events.register(OrderShipped)
    await bus.publish("orders", OrderShipped(aggregate_id="o", data={"n": 1}))
    assert seen == ["order.shipped"]


async def test_a_callable_object_can_subscribe() -> None:
    bus = _bus()

    class Auditor:
        def __init__(self) -> None:
            self.seen: list[str] = []

        async def __call__(self, event: OrderPlaced, ctx: MessageContext) -> None:
            self.seen.append(event.aggregate_id)

    auditor = Auditor()
    bus.subscribe("orders", auditor)
    await bus.publish("orders", placed("o-1"))
    assert auditor.seen == ["o-1"]
    with pytest.raises(TypeError, match="async"):
        bus.subscribe("orders", lambda event: None)


async def test_events_published_without_an_origin_carry_the_service_name() -> None:
    bus = InMemoryEventBus(order_registry(), service_name="orders-svc")
    await bus.publish("orders", placed("o-1"))
    await bus.publish("orders", placed("o-2").model_copy(update={"service_name": "elsewhere"}))
    names = [json.loads(r.value or b"")["service_name"] for r in bus.published["orders"]]
    assert names == ["orders-svc", "elsewhere"]


async def test_an_unavailable_store_costs_no_attempt_and_never_dead_letters() -> None:
    class FlakyStore:
        def __init__(self) -> None:
            self.outages = 3

        async def run_once(self, event_id: str, handler: str, work: Any) -> bool:
            if self.outages:
                self.outages -= 1
                raise StoreUnavailableError("no free connection")
            await work(None)
            return True

    attempts: list[int] = []
    bus = InMemoryEventBus(order_registry(), idempotency=FlakyStore(),
                           retry=RetryPolicy(max_attempts=1, initial_delay=0))

    async def record(event: OrderPlaced, ctx: MessageContext) -> None:
        attempts.append(ctx.attempt)

    bus.subscribe("orders", record)
    with patch("core.messaging.dispatch.STORE_RETRY",
               RetryPolicy(max_attempts=100, initial_delay=0)):
        await bus.publish("orders", placed("o-1"))
    assert attempts == [1] and not bus.dead_letters.records


async def test_a_retry_runs_only_the_failing_handler_even_with_a_store_that_forgets() -> None:
    class PassThrough:  # remembers nothing: what dispatch itself does is all that counts
        async def run_once(self, event_id: str, handler: str, work: Any) -> bool:
            await work(None)
            return True

    bus = InMemoryEventBus(order_registry(), idempotency=PassThrough(),
                           retry=RetryPolicy(max_attempts=3, initial_delay=0))
    handlers = HandlerRegistry(bus.events)
    calls = {"ok": 0, "flaky": 0}

    @handlers.handles(OrderPlaced)
    async def ok(event: OrderPlaced) -> None:
        calls["ok"] += 1

    @handlers.handles(OrderPlaced)
    async def flaky(event: OrderPlaced) -> None:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise TimeoutError("slow")

    bus.subscribe("orders", handlers)
    await bus.publish("orders", placed("o-1"))
    assert calls == {"ok": 1, "flaky": 3}
    assert not bus.dead_letters.records


async def test_an_explicit_name_keeps_a_renamed_handler_from_running_again() -> None:
    store, seen = InMemoryIdempotencyStore(), []
    event = placed("o-1")

    async def welcome(event: OrderPlaced) -> None:
        seen.append("welcome")

    async def greet(event: OrderPlaced) -> None:  # the same handler, renamed in a later deploy
        seen.append("greet")

    for fn in (welcome, greet):
        bus = InMemoryEventBus(order_registry(), idempotency=store)
        handlers = HandlerRegistry(bus.events)
        handlers.handles(OrderPlaced, name="send-welcome")(fn)
        bus.subscribe("orders", handlers)
        await bus.publish("orders", event)
    assert seen == ["welcome"]


def test_a_handler_is_named_after_its_function_or_its_class() -> None:
    class Auditor:
        async def __call__(self, event: OrderPlaced) -> None:
            return None

    events = order_registry()
    (named,) = HandlerRegistry.for_all(events, Auditor()).handlers_for(placed("o-1"))
    assert named.name == f"{__name__}.{Auditor.__qualname__}"
    handlers = HandlerRegistry(events)
    handlers.add(OrderPlaced, _audit)
    assert [h.name for h in handlers.handlers_for(placed("o-1"))] == [f"{__name__}._audit"]
    assert len(handlers) == 1 and len(HandlerRegistry.for_all(events, Auditor())) == 1


def test_a_name_twice_for_one_event_or_a_non_function_is_refused() -> None:
    handlers = HandlerRegistry(order_registry())
    handlers.add(OrderPlaced, _audit, name="audit")
    with pytest.raises(ValueError, match="'audit' is already registered"):
        handlers.add(OrderPlaced, _audit, name="audit")
    with pytest.raises(TypeError, match=r"must be an async function .* \(event, ctx\)$"):
        handlers.add(OrderPlaced, "not a function")  # type: ignore[arg-type]


async def _audit(event: OrderPlaced) -> None:
    return None
