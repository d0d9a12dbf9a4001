"""Handler semantics through the in-memory bus: the same dispatcher the Kafka consumer uses."""

import pytest

from core.messaging.dlq import H_ATTEMPTS, H_ERROR, H_ERROR_TYPE, H_HANDLERS
from core.messaging.event_bus import InMemoryEventBus
from core.messaging.exceptions import PermanentHandlerError
from core.messaging.handlers import HandlerRegistry
from core.messaging.types import MessageContext, Record
from core.resilience.retry import RetryPolicy
from tests.support import (
    OrderPlaced,
    OrderPlacedV1,
    OrderPlacedV1Data,
    order_registry,
    placed,
)


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


async def test_only_the_failing_handler_runs_again() -> None:
    bus, calls = _bus(), {"ok": 0, "flaky": 0}
    handlers = HandlerRegistry(bus.events)

    @handlers.handles(OrderPlaced)
    async def ok(event: OrderPlaced) -> None:
        calls["ok"] += 1

    @handlers.handles(OrderPlaced)
    async def flaky(event: OrderPlaced) -> None:
        calls["flaky"] += 1
        if calls["flaky"] < 2:
            raise TimeoutError("slow")

    bus.subscribe("orders", handlers)
    await bus.publish("orders", placed("o-1"))
    assert calls == {"ok": 1, "flaky": 2}
    assert not bus.dead_letters.records


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
