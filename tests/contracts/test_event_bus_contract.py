"""The `EventBus` contract, run against `InMemoryEventBus` and `KafkaEventBus` alike.

Every case goes through the `harness` fixture (memory and kafka, see `bus_harness.py`), so
the fake cannot quietly drift from the broker: a case that holds on one and not the other
fails here. Unhappy paths sit beside the happy ones: handlers failing, running out of
attempts, poison bytes, event types nobody handles, duplicates, a stop mid-handler.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from typing import Any

import pytest
from pydantic import BaseModel

from core import correlation
from core.messaging import dlq
from core.messaging.dispatch import Outcome
from core.messaging.errors import PermanentHandlerError
from core.messaging.events import BaseEvent, DomainEvent
from core.messaging.handlers import HandlerMiddleware, HandlerRegistry
from core.messaging.types import (
    HEADER_CAUSATION_ID,
    HEADER_CORRELATION_ID,
    EventHandler,
    MessageContext,
)
from core.resilience.retry import RetryPolicy
from tests.contracts.bus_harness import HARNESSES, BusHarness, Capability
from tests.helpers import OrderPlaced, order_registry, placed


class ShippedData(BaseModel):
    n: int


class OrderShipped(DomainEvent[ShippedData]):
    """Another team's event on the same topic: this consumer has no handler for it."""

    EVENT_TYPE = "order.shipped"


async def test_a_published_event_reaches_its_handler_with_its_data_and_context(
    harness: BusHarness,
) -> None:
    seen: list[tuple[OrderPlaced, MessageContext]] = []

    async def record(event: OrderPlaced, ctx: MessageContext) -> None:
        seen.append((event, ctx))

    await harness.open(record)
    event = placed("o-1", seq=7, amount_cents=1234)
    await harness.publish(event, headers=[(HEADER_CORRELATION_ID, b"req-42")])
    await harness.settle(lambda: seen)
    ((got, ctx),) = seen
    assert got.event_id == event.event_id and got.data == event.data
    assert got.aggregate_id == "o-1" and got.service_name == "contract"
    assert ctx.attempt == 1 and ctx.consumer_group == harness.group
    assert ctx.record.topic == harness.topic and ctx.record.key == b"o-1"
    assert ctx.correlation_id == "req-42"


async def test_middleware_wraps_each_run_and_what_the_handler_publishes_carries_its_ids(
    harness: BusHarness,
) -> None:
    log: list[tuple[str, correlation.Correlation | None]] = []

    def watching(label: str) -> HandlerMiddleware:
        def middleware(call: EventHandler, name: str) -> EventHandler:
            async def run(event: BaseEvent[Any], ctx: MessageContext) -> None:
                log.append((f"{label}>", correlation.current()))
                await call(event, ctx)
                log.append((f"<{label}", correlation.current()))
            return run
        return middleware

    async def handle(event: OrderPlaced) -> None:
        log.append(("handler", correlation.current()))
        if event.data.seq == 0:  # a follow-up nobody here handles
            await harness.bus.publish(harness.topic, OrderShipped(
                aggregate_id=event.aggregate_id, data=ShippedData(n=1)))

    await harness.open(handle, middleware=[watching("outer"), watching("inner")])
    cause = placed("o-1").model_copy(update={"correlation_id": "req-42"})
    await harness.publish(cause)
    await harness.settle(lambda: len(log) == 5)
    ids = correlation.Correlation("req-42", str(cause.event_id))
    assert log == [("outer>", ids), ("inner>", ids), ("handler", ids), ("<inner", ids),
                   ("<outer", ids)]
    follow_up = await harness.settle(lambda: _follow_ups(harness))
    assert follow_up == [("req-42", str(cause.event_id), b"req-42", str(cause.event_id).encode())]


async def _follow_ups(harness: BusHarness) -> list[tuple[Any, ...]]:
    """The shipped events on the topic: their ids in the envelope and in the headers."""
    found = []
    for record in await harness.stored():
        if record.header("event_type") != OrderShipped.EVENT_TYPE:
            continue
        body = json.loads(record.value or b"{}")
        headers = dict(record.headers)
        found.append((body.get("correlation_id"), body.get("causation_id"),
                      headers.get(HEADER_CORRELATION_ID), headers.get(HEADER_CAUSATION_ID)))
    return found


async def test_publish_returns_where_the_record_is_stored(harness: BusHarness) -> None:
    async def ignore(event: OrderPlaced) -> None:
        return None

    await harness.open(ignore)
    event = placed("o-stored")
    report = await harness.publish(event)
    # No settle: once publish has returned, the record is there for any reader.
    stored = {(r.partition, r.offset): r for r in await harness.stored()}
    assert report.topic == harness.topic
    record = stored[(report.partition, report.offset)]
    assert record.key == b"o-stored" and record.header("event_id") == str(event.event_id)


async def test_a_handler_failing_n_minus_1_times_succeeds_on_attempt_n_after_backoff(
    harness: BusHarness,
) -> None:
    attempts: list[tuple[int, float]] = []

    async def flaky(event: OrderPlaced, ctx: MessageContext) -> None:
        attempts.append((ctx.attempt, time.monotonic()))
        if ctx.attempt < 3:
            raise ConnectionError("downstream flapping")

    policy = RetryPolicy(max_attempts=3, initial_delay=0.1, max_delay=1.0, jitter=False)
    await harness.open(flaky, retry=policy)
    await harness.publish(placed("o-flaky"))
    await harness.settle(lambda: harness.outcomes()[Outcome.HANDLED] == 1)
    assert [a for a, _ in attempts] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19, f"no exponential backoff: {gaps}"
    assert await harness.dead_letters() == []


async def test_out_of_attempts_the_event_is_dead_lettered_with_the_error(
    harness: BusHarness,
) -> None:
    attempts: list[int] = []

    async def broken(event: OrderPlaced, ctx: MessageContext) -> None:
        attempts.append(ctx.attempt)
        raise ConnectionError("card processor unreachable")

    await harness.open(broken)  # FAST: three attempts, no delay
    event = placed("o-dead")
    await harness.publish(event)
    (letter,) = await harness.settle(harness.dead_letters)
    assert attempts == [1, 2, 3]
    assert letter.error == "card processor unreachable"
    assert letter.error_type == "builtins.ConnectionError"
    assert letter.attempts == 3 and letter.event_id == str(event.event_id)
    assert letter.original_topic == harness.topic and letter.record.key == b"o-dead"
    assert letter.record.header(dlq.H_GROUP) == harness.group
    assert harness.outcomes()[Outcome.DEAD_LETTERED] == 1


async def test_a_permanent_error_is_dead_lettered_without_retries(harness: BusHarness) -> None:
    attempts: list[int] = []

    async def reject(event: OrderPlaced, ctx: MessageContext) -> None:
        attempts.append(ctx.attempt)
        raise PermanentHandlerError("account closed")

    await harness.open(reject, retry=RetryPolicy(max_attempts=5, initial_delay=0,
                                                 should_retry=lambda e: not isinstance(
                                                     e, PermanentHandlerError)))
    await harness.publish(placed("o-closed"))
    (letter,) = await harness.settle(harness.dead_letters)
    assert attempts == [1] and letter.attempts == 1
    assert letter.error_type.endswith("PermanentHandlerError")


async def test_a_poison_record_is_dead_lettered_at_once_and_the_next_one_handled(
    harness: BusHarness,
) -> None:
    seen: list[str] = []

    async def record(event: OrderPlaced) -> None:
        seen.append(event.aggregate_id or "")

    await harness.open(record)
    await harness.publish_raw(b"\x00\xffgarbage", b"o-poison")
    await harness.publish(placed("o-poison"))
    await harness.settle(lambda: seen == ["o-poison"])
    (letter,) = await harness.settle(harness.dead_letters)
    assert "not JSON" in letter.error and letter.attempts == 1


async def test_events_of_one_key_are_handled_in_publish_order_one_at_a_time(
    harness: BusHarness,
) -> None:
    keys, per_key = 4, 30
    seen: dict[str, list[int]] = collections.defaultdict(list)
    running: set[str] = set()
    overlaps: list[str] = []

    async def record(event: OrderPlaced) -> None:
        key = event.aggregate_id or ""
        if key in running:
            overlaps.append(key)
        running.add(key)
        seen[key].append(event.data.seq)
        await asyncio.sleep(0.001 * (event.data.seq % 3))  # uneven work shuffles completion
        running.discard(key)

    await harness.open(record)
    interleaved = [placed(f"k-{k}", seq=s) for s in range(per_key) for k in range(keys)]
    half = len(interleaved) // 2
    for event in interleaved[:half]:  # one at a time...
        await harness.publish(event)
    await harness.publish_many(interleaved[half:])  # ...and pipelined
    await harness.settle(lambda: sum(map(len, seen.values())) == keys * per_key)
    assert overlaps == [], "records of one key ran at the same time"
    assert {k: v for k, v in seen.items()} == {f"k-{k}": list(range(per_key))
                                              for k in range(keys)}


async def test_an_event_type_without_a_handler_is_skipped_not_dead_lettered(
    harness: BusHarness,
) -> None:
    handlers = HandlerRegistry(order_registry())
    seen: list[str] = []

    @handlers.handles(OrderPlaced)
    async def record(event: OrderPlaced) -> None:
        seen.append(str(event.event_id))

    await harness.open(handlers, events=handlers.events)
    await harness.publish(OrderShipped(aggregate_id="o-1", data=ShippedData(n=1)))
    marker = placed("o-1")  # same key: handled only after the unknown one was dealt with
    await harness.publish(marker)
    await harness.settle(lambda: seen == [str(marker.event_id)])
    assert harness.outcomes()[Outcome.NO_HANDLER] == 1
    assert harness.outcomes()[Outcome.DEAD_LETTERED] == 0
    assert await harness.dead_letters() == []


async def test_the_same_event_published_twice_has_one_effect(harness: BusHarness) -> None:
    effects: list[str] = []

    async def ship(event: OrderPlaced) -> None:
        effects.append(str(event.event_id))

    await harness.open(ship)
    event, marker = placed("o-twice"), placed("o-twice", seq=1)
    await harness.publish(event)
    await harness.publish(event)  # a duplicate produce, e.g. a relay retry
    await harness.publish(marker)  # same key: arrives after both copies
    await harness.settle(lambda: str(marker.event_id) in effects)
    assert effects == [str(event.event_id), str(marker.event_id)]
    assert harness.outcomes()[Outcome.HANDLED] == 3  # the copy was delivered, and skipped


async def test_stop_with_a_handler_in_flight_behaves_as_the_implementation_states(
    harness: BusHarness,
) -> None:
    started, finished = asyncio.Event(), asyncio.Event()
    release = asyncio.Event()

    async def slow(event: OrderPlaced) -> None:
        started.set()
        await release.wait()
        finished.set()

    await harness.open(slow)
    publishing = asyncio.create_task(harness.publish(placed("o-slow")))
    try:
        await asyncio.wait_for(started.wait(), 20)
        if harness.drain.supported:
            await publishing  # the publisher is done; the handler runs in the consumer
            stopping = asyncio.create_task(harness.stop())
            await asyncio.sleep(0.5)
            assert not stopping.done(), "stop() returned while a handler was still running"
            release.set()
            await asyncio.wait_for(stopping, 20)
            assert finished.is_set()
        else:
            # The documented alternative: the publisher owns the in-flight work.
            assert not publishing.done(), "publish returned before its handler finished"
            await asyncio.wait_for(harness.stop(), 1)  # nothing to drain
            assert not publishing.done() and not finished.is_set()  # nor cancelled
            release.set()
            await asyncio.wait_for(publishing, 5)
            assert finished.is_set()
    finally:
        release.set()
        await asyncio.wait([publishing])


STATED = {"memory": {"drain": False}, "kafka": {"drain": True}}
"""What each implementation honours of the capability-dependent cases: changing a harness's
statement, or adding a capability, fails here until this table agrees."""


@pytest.mark.parametrize("implementation", list(HARNESSES))
def test_each_implementation_states_its_capabilities_with_reasons(implementation: str) -> None:
    cls = HARNESSES[implementation]
    capabilities = {name: value for name in dir(cls)
                    if isinstance(value := getattr(cls, name), Capability)}
    assert {n: c.supported for n, c in capabilities.items()} == STATED[implementation]
    for name, capability in capabilities.items():
        assert len(capability.reason) > 20, f"{implementation}.{name} states no reason"
