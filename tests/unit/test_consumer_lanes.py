"""EventConsumer's own logic over a stand-in client (tests/unit/fake_kafka.py): per-key
order without overlap, offsets that never pass an unfinished record, flow control, rebalances,
stop and failure. The same behaviour against a real broker: tests/integration."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import core.messaging.consumer as consumer_module
from core.config import KafkaConfig
from core.messaging.consumer import EventConsumer
from core.messaging.dispatch import Outcome
from core.messaging.dlq import InMemoryDeadLetterSink
from core.messaging.exceptions import ConsumerFailedError
from core.messaging.types import MessageContext, Record
from core.resilience.retry import RetryPolicy
from tests.support import OrderPlaced, eventually, order_registry, placed
from tests.unit.fake_kafka import FakeBroker

P0, P1 = ("orders", 0), ("orders", 1)
CONFIG = KafkaConfig("fake:9092", "client", "orders-group")
SOON = 5.0  # generous: a condition that holds is met in milliseconds


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    broker = FakeBroker([P0, P1])
    monkeypatch.setattr(consumer_module, "KafkaConsumer", broker.consumer_factory())
    monkeypatch.setattr(consumer_module, "KafkaAdmin", broker.admin_factory())
    monkeypatch.setattr(consumer_module, "STALL_WAIT", 0.02)
    monkeypatch.setattr(consumer_module, "POLL_ERROR_WAIT", 0.01)
    monkeypatch.setattr(consumer_module, "CRASH_RETRY", RetryPolicy(initial_delay=0))
    return broker


Handle = Callable[[OrderPlaced, MessageContext], Awaitable[None]]


@pytest.fixture
async def running(broker: FakeBroker) -> AsyncIterator[Callable[..., Awaitable[EventConsumer]]]:
    started: list[EventConsumer] = []

    async def start(handler: Handle, **options: Any) -> EventConsumer:
        options.setdefault("dead_letters", InMemoryDeadLetterSink())
        options.setdefault("create_topics", False)
        consumer = EventConsumer(CONFIG, producer=None, events=order_registry(),  # type: ignore[arg-type]
                                 retry=RetryPolicy(max_attempts=2, initial_delay=0), **options)
        consumer.subscribe("orders", handler)
        await consumer.start()
        started.append(consumer)
        await consumer.wait_assigned(SOON)
        return consumer

    yield start
    for consumer in started:
        consumer._drain_timeout = min(consumer._drain_timeout, 0.5)  # a failed test ends fast
        await consumer.stop()


async def ignore(event: OrderPlaced) -> None:
    return None


def seq_of(event: OrderPlaced) -> int:
    return event.data.seq


async def test_records_of_a_key_run_in_order_and_never_overlap_while_keys_run_at_once(
    broker: FakeBroker, running: Any
) -> None:
    active: dict[str, int] = defaultdict(int)
    overlap, seen = [0], defaultdict(list)
    most_at_once = [0]

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        key = event.aggregate_id
        active[key] += 1
        overlap[0] = max(overlap[0], active[key])
        most_at_once[0] = max(most_at_once[0], sum(active.values()))
        await asyncio.sleep(0.002 * (3 - seq_of(event) % 3))  # later records finish sooner
        seen[key].append(seq_of(event))
        active[key] -= 1

    for seq in range(5):
        for key in ("a", "b", "c"):
            broker.append(P0, placed(key, seq))
    await running(handle)
    await eventually(lambda: sum(map(len, seen.values())) == 15, SOON)
    assert dict(seen) == {key: [0, 1, 2, 3, 4] for key in "abc"}
    assert overlap[0] == 1, "two records of one key ran at the same time"
    assert most_at_once[0] > 1, "different keys never ran concurrently"
    await eventually(lambda: broker.stored.get(P0) == 15, SOON)


async def test_a_stored_offset_never_passes_an_unfinished_record(
    broker: FakeBroker, running: Any
) -> None:
    gate, done = asyncio.Event(), []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        if event.aggregate_id == "slow":
            await gate.wait()
        done.append(ctx.record.offset)

    broker.append(P0, placed("fast", 0))
    broker.append(P0, placed("slow", 0))
    for seq in range(3):
        broker.append(P0, placed("fast", seq + 1))
    consumer = await running(handle)
    await eventually(lambda: len(done) == 4, SOON)
    await eventually(lambda: broker.stored.get(P0) == 1, SOON)
    await asyncio.sleep(0.05)  # several polls: nothing past the slow record is stored
    assert broker.stored[P0] == 1
    gate.set()
    await eventually(lambda: broker.stored.get(P0) == 5, SOON)
    assert consumer.processed[Outcome.HANDLED] == 5


async def test_a_dispatcher_crash_keeps_the_record_at_the_head_of_its_key(
    broker: FakeBroker, running: Any
) -> None:
    order: list[tuple[str, int]] = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        order.append((event.aggregate_id, seq_of(event)))

    broker.append(P0, placed("a", 0))
    broker.append(P0, placed("a", 1))
    broker.append(P0, placed("b", 0))
    crashes = []
    consumer = EventConsumer(CONFIG, producer=None, events=order_registry(),  # type: ignore[arg-type]
                             dead_letters=InMemoryDeadLetterSink(), create_topics=False)
    consumer.subscribe("orders", handle)
    dispatcher = consumer._routes["orders"]
    process = dispatcher.process

    async def crash_twice_on_the_first(record: Record) -> Outcome:
        if record.offset == 0 and len(crashes) < 2:
            crashes.append(record.offset)
            raise RuntimeError("a bug in dispatch")
        return await process(record)

    dispatcher.process = crash_twice_on_the_first  # type: ignore[method-assign]
    await consumer.start()
    try:
        await eventually(lambda: len(order) == 3, SOON)
        assert crashes == [0, 0]
        assert [o for o in order if o[0] == "a"] == [("a", 0), ("a", 1)]
        assert consumer.processed[Outcome.HANDLED] == 3
        await eventually(lambda: broker.stored.get(P0) == 3, SOON)
    finally:
        await consumer.stop()


async def test_a_full_consumer_pauses_the_stuck_partition_and_the_others_keep_flowing(
    broker: FakeBroker, running: Any
) -> None:
    gate, done = asyncio.Event(), defaultdict(list)

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        if event.aggregate_id == "stuck":
            await gate.wait()
        done[ctx.record.partition].append(seq_of(event))

    for seq in range(10):
        broker.append(P0, placed("stuck", seq))
    consumer = await running(handle, max_in_flight=4)
    await eventually(lambda: P0 in broker.paused, SOON)
    assert broker.pause_calls == [[P0]]
    assert broker.max_records[-1] == 4, "a paused partition's records still take up room"
    for seq in range(8):
        broker.append(P1, placed(f"k{seq}", seq))
    await eventually(lambda: len(done[1]) == 8, SOON)
    assert done[0] == [] and consumer._pending[P0] == 4
    gate.set()
    await eventually(lambda: len(done[0]) == 10, SOON)
    assert done[0] == list(range(10))
    assert P0 not in broker.paused
    await eventually(lambda: broker.stored.get(P0) == 10 and broker.stored.get(P1) == 8, SOON)


async def test_a_consumer_with_room_left_asks_for_that_many_and_never_pauses(
    broker: FakeBroker, running: Any
) -> None:
    gate, started = asyncio.Event(), []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        started.append(seq_of(event))
        await gate.wait()

    for seq in range(3):
        broker.append(P0, placed(f"k{seq}", seq))
    await running(handle, max_in_flight=4)
    await eventually(lambda: len(started) == 3, SOON)
    polls = broker.client.polls
    await eventually(lambda: broker.client.polls > polls + 3, SOON)
    assert broker.max_records[-1] == 1
    assert broker.pause_calls == []
    gate.set()


async def test_a_full_partition_resumes_once_drained_to_half_its_share(
    broker: FakeBroker, running: Any
) -> None:
    gates = [asyncio.Event() for _ in range(8)]

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        await gates[seq_of(event)].wait()

    for seq in range(8):
        broker.append(P0, placed(f"k{seq}", seq))  # distinct keys: they run side by side
    consumer = await running(handle, max_in_flight=8)  # a share of 4 for each partition
    await eventually(lambda: P0 in broker.paused, SOON)
    assert consumer._pending[P0] == 8
    for seq in range(5):  # 3 left: still above half the share
        gates[seq].set()
        await eventually(lambda left=7 - seq: consumer._pending[P0] == left, SOON)
    await asyncio.sleep(0.05)
    assert P0 in broker.paused
    gates[5].set()  # 2 left: half the share
    await eventually(lambda: P0 not in broker.paused, SOON)
    for gate in gates[6:]:
        gate.set()


async def test_revoked_partitions_finish_their_records_and_hand_back_the_offsets(
    broker: FakeBroker, running: Any
) -> None:
    gate, done = asyncio.Event(), []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        await gate.wait()
        done.append((ctx.record.partition, seq_of(event)))

    broker.append(P0, placed("a", 0))
    broker.append(P1, placed("b", 0))
    consumer = await running(handle, drain_timeout=SOON)
    await eventually(lambda: sum(consumer._pending.values()) == 2, SOON)
    broker.client.revoke([P0])
    asyncio.get_running_loop().call_later(0.05, gate.set)
    await eventually(lambda: broker.revoked_commits, SOON)
    assert broker.revoked_commits == [{P0: 1}]
    assert (0, 0) in done
    assert P0 not in consumer._owned and P0 not in consumer._pending
    await eventually(lambda: broker.stored.get(P1) == 1, SOON)


async def test_a_revoked_record_that_outlives_the_drain_timeout_is_cancelled_not_committed(
    broker: FakeBroker, running: Any
) -> None:
    cancelled, done = [], []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        if event.aggregate_id == "stuck":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(ctx.record.offset)
                raise
        done.append(event.aggregate_id)

    broker.append(P0, placed("fast", 0))
    broker.append(P0, placed("stuck", 0))
    broker.append(P0, placed("fast", 1))
    consumer = await running(handle, drain_timeout=0.05)
    await eventually(lambda: done == ["fast", "fast"], SOON)
    broker.client.revoke([P0])
    await eventually(lambda: broker.revoked_commits, SOON)
    assert broker.revoked_commits == [{P0: 1}], "committed past the record it cancelled"
    assert cancelled == [1]
    assert consumer._lanes == {} and consumer._pending == {}


async def test_lost_partitions_stop_their_handlers_at_once_and_commit_nothing(
    broker: FakeBroker, running: Any
) -> None:
    cancelled = asyncio.Event()

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    broker.append(P0, placed("a", 0))
    consumer = await running(handle, drain_timeout=60)
    await eventually(lambda: consumer._pending.get(P0) == 1, SOON)
    broker.client.lose([P0])
    await asyncio.wait_for(cancelled.wait(), SOON)  # not after the 60 s drain timeout
    await eventually(lambda: P0 not in consumer._owned, SOON)
    assert broker.revoked_commits == [] and P0 not in broker.stored
    assert consumer._pending == {} and consumer._workers == {}


async def test_stop_finishes_in_flight_records_stores_their_offsets_and_closes(
    broker: FakeBroker, running: Any
) -> None:
    gate, done = asyncio.Event(), []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        await gate.wait()
        done.append(seq_of(event))

    broker.append(P0, placed("a", 0))
    consumer = await running(handle, drain_timeout=SOON)
    await eventually(lambda: consumer._pending.get(P0) == 1, SOON)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "stop did not wait for the record in flight"
    gate.set()
    await asyncio.wait_for(stopping, SOON)
    assert done == [0] and broker.stored[P0] == 1
    assert broker.client.closed and not consumer.running


async def test_stop_cancels_records_that_outlive_the_drain_timeout(
    broker: FakeBroker, running: Any
) -> None:
    cancelled = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(ctx.record.offset)
            raise

    broker.append(P0, placed("a", 0))
    consumer = await running(handle, drain_timeout=0.1)
    await eventually(lambda: consumer._pending.get(P0) == 1, SOON)
    await asyncio.wait_for(consumer.stop(), SOON)
    assert cancelled == [0] and P0 not in broker.stored and broker.client.closed


async def test_a_cancelled_stop_still_leaves_the_group_and_is_not_swallowed(
    broker: FakeBroker, running: Any
) -> None:
    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        await asyncio.Event().wait()

    broker.append(P0, placed("a", 0))
    consumer = await running(handle, drain_timeout=60)
    await eventually(lambda: consumer._pending.get(P0) == 1, SOON)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0.05)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert broker.client.closed and not consumer.running and consumer._workers == {}


async def test_a_stopped_consumer_starts_again_where_it_stopped(
    broker: FakeBroker, running: Any
) -> None:
    done: list[int] = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        done.append(seq_of(event))

    broker.append(P0, placed("a", 0))
    consumer = await running(handle)
    await eventually(lambda: broker.stored.get(P0) == 1, SOON)
    await consumer.stop()
    broker.append(P0, placed("a", 1))
    await consumer.start()
    await consumer.wait_assigned(SOON)
    await eventually(lambda: broker.stored.get(P0) == 2, SOON)
    assert done == [0, 1] and len(broker.clients) == 2 and broker.clients[0].closed


async def test_a_fatal_client_error_stops_the_consumer_and_is_reported(
    broker: FakeBroker, running: Any
) -> None:
    cancelled = asyncio.Event()

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    broker.append(P0, placed("a", 0))
    consumer = await running(handle)
    await eventually(lambda: consumer._pending.get(P0) == 1, SOON)
    broker.client.fail(RuntimeError("group authorization failed"))
    await eventually(lambda: not consumer.running, SOON)
    await asyncio.wait_for(cancelled.wait(), SOON)
    assert isinstance(consumer.failure, ConsumerFailedError)
    with pytest.raises(ConsumerFailedError, match="orders-group"):
        await consumer.wait_assigned(0.01)


async def test_a_passing_poll_error_is_logged_and_polling_goes_on(
    broker: FakeBroker, running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    done: list[int] = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        done.append(seq_of(event))

    consumer = await running(handle)
    broker.client.hiccup(OSError("socket hiccup"))
    broker.append(P0, placed("a", 0))
    await eventually(lambda: done == [0], SOON)
    assert consumer.running and consumer.failure is None
    assert "consumer loop error in group orders-group" in caplog.text


async def test_wait_assigned_says_which_topics_got_no_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = FakeBroker([P0], assign=False)
    monkeypatch.setattr(consumer_module, "KafkaConsumer", broker.consumer_factory())
    monkeypatch.setattr(consumer_module, "KafkaAdmin", broker.admin_factory())
    consumer = EventConsumer(CONFIG, producer=None, events=order_registry(),  # type: ignore[arg-type]
                             dead_letters=InMemoryDeadLetterSink(), create_topics=False)
    consumer.subscribe("orders", ignore)
    await consumer.start()
    try:
        with pytest.raises(TimeoutError, match=r"orders-group .*\['orders'\] within 0.1s"):
            await consumer.wait_assigned(0.1)
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("sink", "create_topics", "expected"),
    [("kafka", True, ["orders", "audit", "orders.dlq", "audit.dlq"]),
     ("kafka", False, ["orders.dlq", "audit.dlq"]),
     ("memory", True, ["orders", "audit"]),
     ("memory", False, [])],
)
async def test_start_creates_the_topics_it_needs_before_joining(
    broker: FakeBroker, sink: str, create_topics: bool, expected: list[str]
) -> None:
    options: dict[str, Any] = {"dead_letters": InMemoryDeadLetterSink()} if sink == "memory" else {}
    consumer = EventConsumer(CONFIG, producer=object(), events=order_registry(),  # type: ignore[arg-type]
                             create_topics=create_topics, **options)
    consumer.subscribe(["orders", "audit"], ignore)
    await consumer.start()
    try:
        assert broker.created_topics == expected
        assert broker.client.subscribed == ["orders", "audit"]
        assert broker.client.group_id == "orders-group"
    finally:
        await consumer.stop()


async def test_subscribing_and_starting_are_checked(broker: FakeBroker) -> None:
    consumer = EventConsumer(CONFIG, producer=None, events=order_registry(),  # type: ignore[arg-type]
                             dead_letters=InMemoryDeadLetterSink(), group_id="other",
                             create_topics=False, fetch_min_bytes=1)
    with pytest.raises(RuntimeError, match="nothing subscribed"):
        await consumer.start()
    consumer.subscribe("orders", ignore)
    await consumer.start()
    try:
        assert consumer.running and consumer.topics == ["orders"]
        assert broker.client.group_id == "other"
        assert broker.client.overrides == {"fetch_min_bytes": 1}
        with pytest.raises(RuntimeError, match="already started"):
            await consumer.start()
        with pytest.raises(RuntimeError, match="subscribe before start"):
            consumer.subscribe("more", ignore)
    finally:
        await consumer.stop()
    assert not consumer.running
    await consumer.stop()  # a second stop is a no-op
