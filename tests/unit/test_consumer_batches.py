"""EventConsumer takes in a poll's batch in one pass (issue 24): per-key order, one task per
busy key, and offsets that never pass a record still failing, over the stand-in client
(tests/unit/fake_kafka.py)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import core.messaging.consumer as consumer_module
from core.config import KafkaConfig
from core.messaging.consumer import EventConsumer
from core.messaging.dispatch import Outcome
from core.messaging.dlq import InMemoryDeadLetterSink
from core.messaging.offsets import OffsetTracker
from core.messaging.types import MessageContext
from core.resilience.retry import RetryPolicy
from tests.helpers import OrderPlaced, eventually, order_registry, placed
from tests.unit.fake_kafka import FakeBroker

P0, P1 = ("orders", 0), ("orders", 1)
CONFIG = KafkaConfig("fake:9092", "client", "orders-group")
SOON = 5.0


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    broker = FakeBroker([P0, P1])
    monkeypatch.setattr(consumer_module, "KafkaConsumer", broker.consumer_factory())
    monkeypatch.setattr(consumer_module, "KafkaAdmin", broker.admin_factory())
    return broker


@pytest.fixture
async def running(broker: FakeBroker) -> AsyncIterator[Callable[..., Awaitable[EventConsumer]]]:
    started: list[EventConsumer] = []

    async def start(handler: Callable[..., Awaitable[None]], **options: Any) -> EventConsumer:
        consumer = EventConsumer(CONFIG, producer=None, events=order_registry(),  # type: ignore[arg-type]
                                 dead_letters=InMemoryDeadLetterSink(), create_topics=False,
                                 **options)
        consumer.subscribe("orders", handler)
        await consumer.start()
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        consumer._drain_timeout = 0.5
        await consumer.stop()


async def test_a_batch_of_many_keys_keeps_each_keys_order_with_one_task_per_busy_key(
    broker: FakeBroker, running: Any
) -> None:
    keys = [f"k{i}" for i in range(40)]
    partition_of = {key: (P0, P1)[i % 2] for i, key in enumerate(keys)}  # as Kafka's hash does
    for seq in range(5):
        for key in keys:  # interleaved: one poll batch holds every key of both partitions
            broker.append(partition_of[key], placed(key, seq))
    rng = random.Random(24)
    gate = asyncio.Event()
    seen: dict[str, list[int]] = defaultdict(list)
    active: dict[str, int] = defaultdict(int)
    overlap = [0]

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        key = event.aggregate_id
        active[key] += 1
        overlap[0] = max(overlap[0], active[key])
        await gate.wait()
        await asyncio.sleep(rng.random() * 0.001)
        seen[key].append(event.data.seq)
        active[key] -= 1

    consumer = await running(handle)
    # Everything arrived (200 records), every key waits at the gate: one worker per busy lane.
    await eventually(lambda: sum(consumer._pending.values()) == 200, SOON)
    assert set(consumer._workers) == {(*partition_of[key], key.encode()) for key in keys}
    gate.set()
    await eventually(lambda: sum(map(len, seen.values())) == 200, SOON)
    assert dict(seen) == {key: [0, 1, 2, 3, 4] for key in keys}
    assert overlap[0] == 1, "two records of one key ran at once"
    await eventually(lambda: broker.stored.get(P0) == len(broker.logs[P0])
                     and broker.stored.get(P1) == len(broker.logs[P1]), SOON)
    assert consumer.processed[Outcome.HANDLED] == 200


async def test_a_record_failing_in_a_batch_commits_no_offset_past_it_until_it_passes(
    broker: FakeBroker, running: Any
) -> None:
    for seq in range(10):
        broker.append(P0, placed("bad" if seq == 2 else f"ok{seq}", seq))
    healed, tries, done = asyncio.Event(), [0], []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        if event.aggregate_id == "bad" and not healed.is_set():
            tries[0] += 1
            raise RuntimeError("not yet")
        done.append(ctx.record.offset)

    consumer = await running(handle, retry=RetryPolicy(max_attempts=1_000, initial_delay=0.005,
                                                       max_delay=0.005))
    await eventually(lambda: len(done) == 9 and tries[0] >= 3, SOON)
    await eventually(lambda: broker.stored.get(P0) == 2, SOON)
    await asyncio.sleep(0.05)  # more polls and retries: still nothing past the failing one
    assert broker.stored[P0] == 2 and consumer._pending[P0] == 1
    healed.set()
    await eventually(lambda: broker.stored.get(P0) == 10, SOON)
    assert sorted(done) == list(range(10))
    assert consumer.processed == {Outcome.HANDLED: 10, Outcome.NO_HANDLER: 0,
                                  Outcome.DEAD_LETTERED: 0}


def test_a_batch_received_at_once_commits_as_records_finish_and_forgetting_detaches() -> None:
    tracker, tp = OffsetTracker(), ("t", 0)
    progress = tracker.partition(tp)
    progress.received_many([10, 11, 12, 13])
    assert tracker.take() == {}
    progress.finished(12)
    assert tracker.take() == {}  # 10 and 11 still run
    progress.finished(10)
    assert tracker.take() == {tp: 11}
    assert tracker.take() == {}  # taken once
    progress.finished(11)
    assert tracker.take() == {tp: 13}
    assert tracker.forget([tp]) == {tp: 13}
    progress.finished(13)  # a lane finishing after its partition was revoked
    assert tracker.take() == {} and tracker.in_flight(tp) == 0
    assert tracker.partition(tp) is not progress
