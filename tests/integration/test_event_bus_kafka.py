"""The event bus against a real Apache Kafka broker."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import KafkaConfig
from core.messaging import dlq
from core.messaging.errors import PermanentHandlerError
from core.messaging.handlers import HandlerRegistry
from core.messaging.kafka_client import KafkaAdmin, KafkaProducer, read_topic
from core.messaging.types import MessageContext
from core.resilience.retry import RetryPolicy
from tests.helpers import (
    OrderPlaced,
    OrderPlacedV1,
    OrderPlacedV1Data,
    eventually,
    order_registry,
    placed,
    unique,
)
from tests.integration.conftest import BusFactory

pytestmark = pytest.mark.kafka


async def test_publish_in_one_process_consume_in_another_in_order_per_key(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig, spawn
) -> None:
    keys, per_key = 8, 250
    bus = make_bus(order_registry())
    seen: dict[str, list[int]] = collections.defaultdict(list)
    running: set[str] = set()
    overlaps: list[tuple[str, int]] = []

    async def record(event: OrderPlaced) -> None:
        key = event.aggregate_id
        if key in running:  # a record of this key started before the last one finished
            overlaps.append((key, event.data.seq))
        running.add(key)
        seen[key].append(event.data.seq)
        await asyncio.sleep(0.0005 * (event.data.seq % 3))  # uneven work shuffles completion
        running.discard(key)

    bus.subscribe(topic, record)
    await bus.start()
    await bus.consumers[bus.config.consumer_group].wait_assigned()
    publisher = spawn("tests.integration.procs.publish_orders", kafka_config.bootstrap_servers,
                      topic, str(keys), str(per_key))
    out, _ = await asyncio.to_thread(publisher.communicate, timeout=120)
    assert publisher.returncode == 0 and f"acknowledged {keys * per_key}" in out
    await eventually(lambda: sum(map(len, seen.values())) >= keys * per_key, timeout=60)
    assert len(seen) == keys
    assert overlaps == [], "records of one key ran at the same time"
    for key, seqs in seen.items():
        assert seqs == list(range(per_key)), f"{key} out of order"


async def test_group_members_share_partitions_and_survive_a_killed_member(
    make_bus: BusFactory, kafka_config: KafkaConfig, spawn, tmp_path: Path
) -> None:
    topic, group = unique("shared"), unique("group")
    await KafkaAdmin(kafka_config).create_topics([topic], partitions=4)
    out_file = tmp_path / "victim.txt"
    victim = spawn("tests.integration.procs.consume_orders", kafka_config.bootstrap_servers,
                   topic, group, str(out_file))
    assert await asyncio.to_thread(victim.stdout.readline) == "assigned\n"  # type: ignore[union-attr]

    survivor = make_bus(order_registry(), group=group)
    mine: list[tuple[int, str]] = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        mine.append((ctx.record.partition, str(event.event_id)))

    survivor.subscribe(topic, handle)
    await survivor.start()
    consumer = survivor.consumers[group]
    await consumer.wait_assigned()

    def victims() -> list[tuple[int, str]]:
        lines = out_file.read_text().splitlines() if out_file.exists() else []
        return [(int(p), e) for p, e in (line.split() for line in lines)]

    producer = make_bus(order_registry())
    await producer.start()
    sent: list[str] = []
    for batch in range(20):
        events = [placed(f"o-{batch}-{i}", seq=i) for i in range(50)]
        await producer.publish_many(topic, events)
        sent += [str(e.event_id) for e in events]
        if batch == 3:
            await eventually(lambda: len(victims()) > 0)  # both members are working
            assert mine, "the partitions were not shared"
            victim.kill()
        await asyncio.sleep(0.05)
    await eventually(lambda: set(sent) <= {e for _, e in mine} | {e for _, e in victims()},
                     timeout=90)
    assert {p for p, _ in mine} == {0, 1, 2, 3}, "the survivor did not take over every partition"


async def test_failing_handler_backs_off_dead_letters_and_replays_once(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig
) -> None:
    broken = True
    attempts: list[float] = []
    effects: list[str] = []
    handlers = HandlerRegistry(order_registry())

    @handlers.handles(OrderPlaced)
    async def charge(event: OrderPlaced) -> None:
        if broken:
            attempts.append(time.monotonic())
            raise ConnectionError("card processor unreachable")
        effects.append(str(event.event_id))

    policy = RetryPolicy(max_attempts=4, initial_delay=0.1, max_delay=1.0, jitter=False)
    bus = make_bus(handlers.events, retry=policy)
    bus.subscribe(topic, handlers)
    await bus.start()
    event = placed("o-dlq")
    await bus.publish(topic, event)

    letters = await eventually(lambda: dlq.list_dead_letters(kafka_config, topic), interval=0.2)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) == 4
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39  # exponential backoff
    (letter,) = letters
    assert letter.error == "card processor unreachable"
    assert letter.error_type == "builtins.ConnectionError"
    assert letter.attempts == 4 and letter.event_id == str(event.event_id)
    assert letter.record.header(dlq.H_TOPIC) == topic
    assert letter.record.header(dlq.H_GROUP) == bus.config.consumer_group
    assert letter.record.key == b"o-dlq"

    broken = False
    replayed = await dlq.replay(kafka_config, bus.producer, topic)
    assert len(replayed) == 1
    await eventually(lambda: effects == [str(event.event_id)])
    # The marker moved: a second replay finds nothing pending...
    assert await dlq.replay(kafka_config, bus.producer, topic) == []
    assert (await dlq.list_dead_letters(kafka_config, topic))[0].replayed
    # ...and forcing it again does no harm: the handler's effect stays single.
    forced = await dlq.replay(kafka_config, bus.producer, topic,
                              offsets=[(letter.record.partition, letter.record.offset)])
    assert len(forced) == 1
    await asyncio.sleep(1.0)
    assert effects == [str(event.event_id)]


async def test_same_event_delivered_twice_has_one_effect(
    make_bus: BusFactory, topic: str
) -> None:
    effects: list[str] = []
    bus = make_bus(order_registry())

    async def ship(event: OrderPlaced) -> None:
        effects.append(str(event.event_id))

    bus.subscribe(topic, ship)
    await bus.start()
    event, marker = placed("o-twice"), placed("o-twice", seq=1)
    await bus.publish(topic, event)
    await bus.publish(topic, event)  # a duplicate produce, e.g. a relay retry
    await bus.publish(topic, marker)  # same key: arrives after both copies
    await eventually(lambda: str(marker.event_id) in effects)
    assert effects == [str(event.event_id), str(marker.event_id)]


async def test_old_version_upcast_and_poison_record_dead_lettered_consumer_keeps_going(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig
) -> None:
    amounts: list[int] = []
    bus = make_bus(order_registry())

    async def book(event: OrderPlaced) -> None:
        amounts.append(event.data.amount_cents)

    bus.subscribe(topic, book)
    await bus.start()
    old_world = make_bus()
    old_world.events.register(OrderPlacedV1)
    await old_world.start()
    await old_world.publish(topic, OrderPlacedV1(
        aggregate_id="o-old", data=OrderPlacedV1Data(order_id="o-old", amount=7)))
    producer = KafkaProducer(kafka_config)
    await producer.start()
    try:
        await producer.produce(topic, b"\x00\xffgarbage", b"o-old")
        await producer.produce(topic, b'{"event_type": "order.placed", "event_version": 2}',
                               b"o-old")
    finally:
        await producer.stop()
    await bus.publish(topic, placed("o-old", amount_cents=999))
    await eventually(lambda: amounts == [700, 999])
    dead = await read_topic(kafka_config, dlq.dlq_topic(topic))
    assert len(dead) == 2
    errors = sorted(r.header(dlq.H_ERROR) or "" for r in dead)
    assert "not JSON" in errors[1] and "data" in errors[0]


async def test_stop_finishes_in_flight_work_and_commits_it(
    make_bus: BusFactory, topic: str
) -> None:
    group = unique("graceful")
    events = [placed(f"o-{i}") for i in range(5)]
    started: list[str] = []
    finished: list[str] = []

    release = asyncio.Event()

    async def slow(event: OrderPlaced) -> None:
        started.append(str(event.event_id))
        await release.wait()
        finished.append(str(event.event_id))

    first = make_bus(order_registry(), group=group)
    first.subscribe(topic, slow)
    await first.start()
    await first.publish_many(topic, events)
    # Every record must be in flight (their partitions may be fetched at different times)
    # before the stop, or the test would prove nothing about in-flight work.
    await eventually(lambda: len(started) == len(events))
    stopping = asyncio.create_task(first.stop())
    await asyncio.sleep(0.3)
    assert not stopping.done(), "stop() returned while handlers were still running"
    release.set()
    await stopping  # the in-flight handlers finish, and their offsets commit
    assert sorted(finished) == sorted(str(e.event_id) for e in events)

    again: list[str] = []

    async def record(event: OrderPlaced) -> None:
        again.append(str(event.event_id))

    second = make_bus(order_registry(), group=group)
    second.subscribe(topic, record)
    await second.start()
    marker = placed("o-marker")
    await second.publish(topic, marker)
    await eventually(lambda: str(marker.event_id) in again)
    assert again == [str(marker.event_id)], "finished work was delivered again"


async def test_dlq_command_lists_and_replays(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig
) -> None:
    handlers = HandlerRegistry(order_registry())
    fixed, effects = False, []

    @handlers.handles(OrderPlaced)
    async def picky(event: OrderPlaced) -> None:
        if not fixed:
            raise PermanentHandlerError("amount exceeds the account limit")
        effects.append(event.aggregate_id)

    bus = make_bus(handlers.events)
    bus.subscribe(topic, handlers)
    await bus.start()
    await bus.publish(topic, placed("o-cli"))
    await eventually(lambda: dlq.list_dead_letters(kafka_config, topic), interval=0.2)

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers,
           "COLUMNS": "200"}
    listing = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "core", "dlq",
                                      "list", topic], env=env, capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    assert "PermanentHandlerError: amount exceeds the account limit" in listing.stdout
    assert "order.placed" in listing.stdout and "1 shown" in listing.stdout

    bad = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "core", "dlq",
                                  "replay", topic, "--offset", "zero"], env=env,
                                  capture_output=True, text=True)
    assert bad.returncode == 2 and "PARTITION:OFFSET" in bad.stderr

    fixed = True
    replay = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "core", "dlq",
                                     "replay", topic], env=env, capture_output=True, text=True)
    assert replay.returncode == 0 and "replayed 1 dead letter" in replay.stdout
    await eventually(lambda: effects == ["o-cli"])


async def test_a_retrying_key_does_not_block_other_keys_in_its_partition(
    make_bus: BusFactory, kafka_config: KafkaConfig
) -> None:
    topic = unique("one-partition")
    await KafkaAdmin(kafka_config).create_topics([topic], partitions=1)
    handled: list[str] = []
    stuck_attempts: list[int] = []
    attempts_when_others_done: list[int] = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        if event.aggregate_id == "stuck":
            stuck_attempts.append(ctx.attempt)
            raise ConnectionError("downstream for this order is down")
        handled.append(event.aggregate_id)
        if len(handled) == 20:
            attempts_when_others_done.append(len(stuck_attempts))

    policy = RetryPolicy(max_attempts=4, initial_delay=0.5, max_delay=2.0, jitter=False)
    bus = make_bus(order_registry(), retry=policy)
    bus.subscribe(topic, handle)
    await bus.start()
    await bus.publish(topic, placed("stuck"))
    await bus.publish_many(topic, [placed(f"flowing-{i}") for i in range(20)])  # behind it
    letters = await eventually(lambda: dlq.list_dead_letters(kafka_config, topic), interval=0.2)
    assert len(handled) == 20
    # The 20 records behind the stuck one, in the same partition, were all handled while it
    # was still between retries: its backoff (0.5 + 1 + 2 s) held up only its own key.
    assert attempts_when_others_done and attempts_when_others_done[0] < 4
    assert stuck_attempts == [1, 2, 3, 4]
    assert [x.record.key for x in letters] == [b"stuck"]
