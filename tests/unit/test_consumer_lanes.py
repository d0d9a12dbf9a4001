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
from core.messaging.dlq import H_GROUP, InMemoryDeadLetterSink
from core.messaging.errors import ConsumerFailedError
from core.messaging.handlers import HandlerRegistry
from core.messaging.types import MessageContext, Record
from core.resilience.retry import RetryPolicy
from tests.helpers import OrderPlaced, eventually, order_registry, placed
from tests.unit.fake_kafka import FakeBroker, FakeProducer

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
        with pytest.raises(TimeoutError, match=r"orders-group .*\['orders'\] within 0.1s: do "
                           r"the topics exist, and are there more members than partitions\?$"):
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
    with pytest.raises(RuntimeError, match=r"^nothing subscribed$"):
        await consumer.start()
    consumer.subscribe("orders", ignore)
    await consumer.start()
    try:
        assert consumer.running and consumer.topics == ["orders"]
        assert broker.client.group_id == "other"
        assert broker.client.overrides == {"fetch_min_bytes": 1}
        with pytest.raises(RuntimeError, match=r"^already started$"):
            await consumer.start()
        with pytest.raises(RuntimeError, match=r"^subscribe before start\(\)$"):
            consumer.subscribe("more", ignore)
    finally:
        await consumer.stop()
    assert not consumer.running
    await consumer.stop()  # a second stop is a no-op


def header(headers: list[tuple[str, bytes]], name: str) -> str:
    return dict(headers)[name].decode()


async def test_a_failing_handler_is_retried_by_the_policy_then_dead_lettered_to_the_producer(
    broker: FakeBroker,
) -> None:
    producer, calls = FakeProducer(), []

    async def fail(event: OrderPlaced, ctx: MessageContext) -> None:
        calls.append(ctx.attempt)
        raise ValueError("no such customer")

    broker.append(P0, placed("a", 0))
    consumer = EventConsumer(CONFIG, producer=producer, events=order_registry(),  # type: ignore[arg-type]
                             retry=RetryPolicy(max_attempts=3, initial_delay=0),
                             create_topics=False)
    consumer.subscribe("orders", fail)
    await consumer.start()
    try:
        await eventually(lambda: producer.produced, SOON)
        topic, value, key, headers = producer.produced[0]
        assert (topic, key) == ("orders.dlq", b"a") and value == broker.logs[P0][0].value
        assert header(headers, H_GROUP) == "orders-group"
        assert calls == [1, 2, 3]
        assert consumer.processed[Outcome.DEAD_LETTERED] == 1
        await eventually(lambda: broker.stored.get(P0) == 1, SOON)
        assert broker.configs == [CONFIG, CONFIG], "the admin and the client get the config"
    finally:
        await consumer.stop()


async def test_a_handler_registry_is_dispatched_as_it_is(
    broker: FakeBroker, running: Any
) -> None:
    handlers, seen = HandlerRegistry(order_registry()), []

    @handlers.handles(OrderPlaced)
    async def on_placed(event: OrderPlaced) -> None:
        seen.append(event.aggregate_id)

    broker.append(P0, placed("a", 0))
    await running(handlers)
    await eventually(lambda: seen == ["a"], SOON)


async def test_every_crash_waits_longer_up_to_a_cap_and_a_success_starts_over(
    broker: FakeBroker, running: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[int] = []

    class Backoff:
        def delay(self, crashes: int) -> float:
            waits.append(crashes)
            return 0.0

    monkeypatch.setattr(consumer_module, "CRASH_RETRY", Backoff())
    done: list[int] = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        done.append(seq_of(event))

    consumer = await running(handle)
    process = consumer._routes["orders"].process
    crashes = {0: 12, 1: 1}

    async def crashing(record: Record) -> Outcome:
        if crashes.get(record.offset, 0) > 0:
            crashes[record.offset] -= 1
            raise RuntimeError("a bug in dispatch")
        return await process(record)

    consumer._routes["orders"].process = crashing  # type: ignore[method-assign]
    broker.append(P0, placed("a", 0))
    broker.append(P0, placed("a", 1))
    await eventually(lambda: done == [0, 1], SOON)
    assert waits == [*range(1, 11), 10, 10, 1]


async def test_a_full_consumer_waits_for_room_before_pausing_anything(
    broker: FakeBroker, running: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "STALL_WAIT", 2.0)
    done: list[int] = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        await asyncio.sleep(0.02)
        done.append(seq_of(event))

    for seq in range(12):
        broker.append(P0, placed(f"k{seq}", seq))
    await running(handle, max_in_flight=2)
    await eventually(lambda: len(done) == 12, SOON)
    assert broker.pause_calls == [], "paused although handlers were freeing room"


async def test_a_consumer_with_room_does_not_wait(
    broker: FakeBroker, running: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "STALL_WAIT", 60.0)
    gate, started = asyncio.Event(), []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        started.append(seq_of(event))
        await gate.wait()

    broker.append(P0, placed("a", 0))
    await running(handle, max_in_flight=2)  # one left: polling goes on at once
    await eventually(lambda: started == [0], SOON)
    broker.append(P0, placed("b", 1))
    await eventually(lambda: started == [0, 1], SOON)
    gate.set()


@pytest.mark.parametrize("partitions", [1, 3])
async def test_partitions_at_their_share_are_paused_and_resume_at_half_of_it(
    monkeypatch: pytest.MonkeyPatch, partitions: int
) -> None:
    """max_in_flight 4 over 1 partition: a share of 4, resumed at 2 left; over 3 partitions a
    share of 1 (4 // 3), so each with one record stuck is paused, resumed when empty."""
    tps = [("orders", p) for p in range(partitions)]
    broker = FakeBroker(tps)
    monkeypatch.setattr(consumer_module, "KafkaConsumer", broker.consumer_factory())
    monkeypatch.setattr(consumer_module, "KafkaAdmin", broker.admin_factory())
    monkeypatch.setattr(consumer_module, "STALL_WAIT", 0.02)
    gates: dict[tuple[int, int], asyncio.Event] = {}

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        await gates.setdefault((ctx.record.partition, seq_of(event)), asyncio.Event()).wait()

    stuck = {0: 4} if partitions == 1 else {0: 1, 1: 1, 2: 2}
    for p, count in stuck.items():
        for seq in range(count):
            broker.append(("orders", p), placed(f"k{p}-{seq}", seq))
    consumer = EventConsumer(CONFIG, producer=None, events=order_registry(),  # type: ignore[arg-type]
                             dead_letters=InMemoryDeadLetterSink(), create_topics=False,
                             max_in_flight=4)
    consumer.subscribe("orders", handle)
    await consumer.start()
    try:
        await eventually(lambda: set(broker.paused) == set(tps), SOON)
        assert len(broker.pause_calls) == 1
        release = [(0, 0), (0, 1)] if partitions == 1 else [(0, 0), (2, 0)]
        for key in release:
            gates.setdefault(key, asyncio.Event()).set()
        await eventually(lambda: ("orders", 0) not in broker.paused, SOON)
        await asyncio.sleep(0.05)
        if partitions == 3:
            assert ("orders", 2) in broker.paused, "resumed with one record left of a share of 1"
            assert ("orders", 1) in broker.paused
    finally:
        for gate in gates.values():
            gate.set()
        consumer._drain_timeout = 0.5
        await consumer.stop()


async def test_two_partitions_at_exactly_their_share_are_both_paused(
    broker: FakeBroker, running: Any
) -> None:
    gate = asyncio.Event()

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        await gate.wait()

    for tp in (P0, P1):
        for seq in range(2):
            broker.append(tp, placed(f"{tp[1]}-{seq}", seq))
    await running(handle, max_in_flight=4)
    await eventually(lambda: broker.paused == {P0, P1}, SOON)
    gate.set()
    await eventually(lambda: broker.paused == set(), SOON)


async def test_with_a_share_of_one_an_idle_partition_is_not_paused(
    broker: FakeBroker, running: Any
) -> None:
    gate = asyncio.Event()

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        await gate.wait()

    for seq in range(2):
        broker.append(P0, placed(f"k{seq}", seq))
    consumer = await running(handle, max_in_flight=2)  # a share of 1 per partition
    await eventually(lambda: P0 in broker.paused, SOON)
    assert broker.pause_calls == [[P0]]
    broker.append(P1, placed("other", 0))
    await eventually(lambda: consumer._pending.get(P1) == 1, SOON)
    gate.set()


async def test_a_paused_partition_that_is_revoked_and_assigned_again_flows(
    broker: FakeBroker, running: Any
) -> None:
    gate, done = asyncio.Event(), []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        if event.aggregate_id == "stuck":
            await gate.wait()
        done.append(event.aggregate_id)

    for seq in range(4):
        broker.append(P0, placed("stuck", seq))
    consumer = await running(handle, max_in_flight=4, drain_timeout=0.05)
    await eventually(lambda: P0 in broker.paused, SOON)
    broker.client.revoke([P0, P1])  # P1 never had a record
    await eventually(lambda: broker.revoked_commits, SOON)
    assert broker.revoked_commits == [{}]
    broker.paused.clear()  # a partition assigned again starts unpaused
    gate.set()
    broker.append(P0, placed("fresh", 0))
    broker.client.assign([P0, P1])
    await eventually(lambda: "fresh" in done, SOON)
    assert done.count("stuck") == 4, "the cancelled records are redone after the assignment"
    assert consumer.failure is None


async def test_revoking_partitions_with_and_without_records_commits_those_with(
    broker: FakeBroker, running: Any
) -> None:
    done: list[int] = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        done.append(seq_of(event))

    broker.append(P0, placed("a", 0))
    await running(handle)
    await eventually(lambda: done == [0], SOON)
    broker.client.revoke([P0, P1])
    await eventually(lambda: broker.revoked_commits, SOON)
    assert broker.revoked_commits == [{P0: 1}]


async def test_a_record_that_needs_a_moment_finishes_within_a_short_drain_timeout(
    broker: FakeBroker, running: Any
) -> None:
    done: list[int] = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        await asyncio.sleep(0.2)
        done.append(seq_of(event))

    broker.append(P0, placed("a", 0))
    consumer = await running(handle, drain_timeout=0.9)
    await eventually(lambda: consumer._pending.get(P0) == 1, SOON)
    broker.client.revoke([P0])
    await eventually(lambda: broker.revoked_commits, SOON)
    assert broker.revoked_commits == [{P0: 1}] and done == [0]


async def test_lost_partitions_do_not_wait_for_handlers_even_briefly(
    broker: FakeBroker, running: Any
) -> None:
    finished: list[int] = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        await asyncio.sleep(0.3)
        finished.append(seq_of(event))

    broker.append(P0, placed("a", 0))
    consumer = await running(handle, drain_timeout=60)
    await eventually(lambda: consumer._pending.get(P0) == 1, SOON)
    broker.client.lose([P0])
    await eventually(lambda: P0 not in consumer._owned and not consumer._workers, SOON)
    await asyncio.sleep(0.4)
    assert finished == [], "a lost partition's handler was left to finish"


async def test_wait_assigned_returns_the_failure_at_once_and_before_start_times_out(
    broker: FakeBroker,
) -> None:
    consumer = EventConsumer(CONFIG, producer=None, events=order_registry(),  # type: ignore[arg-type]
                             dead_letters=InMemoryDeadLetterSink(), create_topics=False)
    consumer.subscribe("orders", ignore)
    with pytest.raises(TimeoutError):
        await consumer.wait_assigned(0.05)
    broker.assign = False
    await consumer.start()
    try:
        broker.client.fail(RuntimeError("fenced"))
        with pytest.raises(ConsumerFailedError, match="fenced"):
            await asyncio.wait_for(consumer.wait_assigned(60), SOON)
    finally:
        await consumer.stop()


async def test_a_default_consumer_polls_up_to_500_and_creates_its_topics(
    broker: FakeBroker,
) -> None:
    consumer = EventConsumer(CONFIG, producer=FakeProducer(), events=order_registry())  # type: ignore[arg-type]
    consumer.subscribe("orders", ignore)
    await consumer.start()
    try:
        await consumer.wait_assigned(SOON)
        await eventually(lambda: broker.max_records, SOON)
        assert broker.max_records[0] == 500
        assert broker.created_topics == ["orders", "orders.dlq"]
    finally:
        await consumer.stop()
