"""The consumer's unhappy paths against the real broker (which, like production, does not
create topics by itself): records that cannot be decoded, other teams' event types, a key
stuck in retries while the in-flight limit is full, a dispatcher crash, stop and restart,
lost partitions, and errors the consumer cannot recover from."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import func, insert, select

from core.config import KafkaConfig
from core.messaging import dlq
from core.messaging.dispatch import Outcome
from core.messaging.errors import (
    ConsumerFailedError,
    PermanentHandlerError,
    TopicSetupError,
)
from core.messaging.events import IntegrationEvent
from core.messaging.inbox import DatabaseIdempotencyStore
from core.messaging.kafka_client import (
    KafkaAdmin,
    KafkaProducer,
    group_lag,
    read_topic,
)
from core.messaging.types import MessageContext, Record
from tests.helpers import OrderPlaced, eventually, order_registry, placed, unique
from tests.integration.conftest import BusFactory
from tests.outbox_service import MoneyDeposited, create_schema, deposit, effects, metadata, registry

pytestmark = pytest.mark.kafka


async def _lag_is_zero(config: KafkaConfig, group: str, topic: str) -> bool:
    lag = await group_lag(config, group, topic)
    return bool(lag) and not any(lag.values())


async def _produce_raw(config: KafkaConfig, topic: str,
                       records: list[tuple[bytes | None, bytes, list[tuple[str, Any]]]]) -> None:
    producer = KafkaProducer(config)
    await producer.start()
    try:
        for value, key, headers in records:
            await producer.produce(topic, value, key, headers)
    finally:
        await producer.stop()


# --- topics the consumer needs --------------------------------------------------------------


async def test_dead_letter_topic_is_created_at_start_and_takes_dead_letters(
    make_bus: BusFactory, kafka_config: KafkaConfig
) -> None:
    topic = unique("fresh")  # nobody created it, nor its .dlq; the broker will not either
    config = KafkaConfig(kafka_config.bootstrap_servers, unique("c"), unique("g"),
                         topic_partitions=2)
    bus = make_bus(order_registry(), config=config)

    async def refuse(event: OrderPlaced) -> None:
        raise PermanentHandlerError("never")

    consumer = bus.subscribe(topic, refuse)
    await bus.start()
    topics = await KafkaAdmin(kafka_config).topics()
    assert topics.get(topic) == 2 and topics.get(dlq.dlq_topic(topic)) == 2
    await consumer.wait_assigned()
    await bus.publish(topic, placed("o-dead"))
    letters = await eventually(lambda: dlq.list_dead_letters(kafka_config, topic), interval=0.2)
    assert [x.record.key for x in letters] == [b"o-dead"]
    await eventually(lambda: _lag_is_zero(kafka_config, consumer.group_id, topic))


async def test_start_fails_clearly_when_its_topics_cannot_be_created(
    make_bus: BusFactory, kafka_config: KafkaConfig
) -> None:
    config = KafkaConfig(kafka_config.bootstrap_servers, unique("c"), unique("g"),
                         topic_replication_factor=3)  # one broker cannot hold 3 replicas
    bus = make_bus(order_registry(), config=config)

    async def handle(event: OrderPlaced) -> None:
        pass

    topic = unique("unmakeable")
    bus.subscribe(topic, handle)
    with pytest.raises(TopicSetupError, match=topic):
        await bus.start()


async def test_existing_topics_are_used_without_creating_them(
    make_bus: BusFactory, kafka_config: KafkaConfig, topic: str
) -> None:
    bus = make_bus(order_registry(), create_topics=False)
    seen: list[str] = []

    async def handle(event: OrderPlaced) -> None:
        seen.append(event.aggregate_id)

    consumer = bus.subscribe(topic, handle)
    await bus.start()
    await consumer.wait_assigned()
    await bus.publish(topic, placed("o-1"))
    await eventually(lambda: seen == ["o-1"])
    missing = make_bus(order_registry(), create_topics=False)
    absent = unique("absent")
    lonely = missing.subscribe(absent, handle)
    await missing.start()
    with pytest.raises(TimeoutError, match=absent):
        await lonely.wait_assigned(timeout=3)


# --- decoding --------------------------------------------------------------------------------


async def test_any_decode_failure_is_poison_and_later_records_of_its_key_follow_it(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig
) -> None:
    events = order_registry()

    @events.upcaster("order.placed", from_version=0)  # a buggy upcaster: raises KeyError
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        return {"missing": data["nope"]}

    seen: list[int] = []

    async def book(event: OrderPlaced) -> None:
        seen.append(event.data.seq)

    bus = make_bus(events)
    consumer = bus.subscribe(topic, book)
    await bus.start()
    await consumer.wait_assigned()
    v0 = b'{"event_type": "order.placed", "event_version": 0, "aggregate_id": "k", "data": {}}'
    await bus.publish(topic, placed("k", seq=1))
    await _produce_raw(kafka_config, topic, [
        (v0, b"k", [("event_type", b"order.placed"), ("event_version", b"0")]),
        (b"{}", b"k", [("event_type", b"order.placed"), ("event_version", None)]),
    ])
    await bus.publish(topic, placed("k", seq=2))
    await eventually(lambda: seen == [1, 2])
    dead = await eventually(lambda: read_topic(kafka_config, dlq.dlq_topic(topic)))
    errors = sorted(r.header(dlq.H_ERROR) or "" for r in dead)
    assert len(errors) == 2
    assert any("KeyError" in e and "upcasting" in e for e in errors), errors
    await eventually(lambda: _lag_is_zero(kafka_config, consumer.group_id, topic))


async def test_a_crash_of_the_dispatcher_never_lets_its_key_be_overtaken(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig
) -> None:
    seen: list[int] = []

    async def book(event: OrderPlaced) -> None:
        seen.append(event.data.seq)

    bus = make_bus(order_registry())
    consumer = bus.subscribe(topic, book)
    dispatcher = consumer._routes[topic]
    real, crashes = dispatcher.process, []

    async def crash_once(record: Record) -> Outcome:
        if not crashes:
            crashes.append(record.offset)
            raise RuntimeError("a bug in the dispatcher")
        return await real(record)

    dispatcher.process = crash_once  # type: ignore[method-assign]
    await bus.start()
    await consumer.wait_assigned()
    await bus.publish_many(topic, [placed("k", seq=i) for i in range(5)])
    await eventually(lambda: len(seen) == 5)
    assert seen == [0, 1, 2, 3, 4] and crashes
    await eventually(lambda: _lag_is_zero(kafka_config, consumer.group_id, topic))


class InvoiceData(BaseModel):
    invoice_id: str


class InvoiceIssued(IntegrationEvent[InvoiceData]):
    EVENT_TYPE = "billing.invoice_issued"


async def test_other_teams_event_types_are_skipped_not_dead_lettered(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig
) -> None:
    seen: list[str] = []

    async def book(event: OrderPlaced) -> None:
        seen.append(event.aggregate_id)

    bus = make_bus(order_registry())
    consumer = bus.subscribe(topic, book)
    await bus.start()
    await consumer.wait_assigned()
    billing = make_bus()
    billing.events.register(InvoiceIssued)
    await billing.start()
    for i in range(3):
        await billing.publish(topic, InvoiceIssued(key="k", data=InvoiceData(invoice_id=str(i))))
    await bus.publish(topic, placed("k"))
    await eventually(lambda: seen == ["k"])
    await eventually(lambda: _lag_is_zero(kafka_config, consumer.group_id, topic))
    assert consumer.processed[Outcome.NO_HANDLER] == 3
    assert consumer.processed[Outcome.DEAD_LETTERED] == 0
    assert await read_topic(kafka_config, dlq.dlq_topic(topic), timeout=2) == []


# --- flow control, stop, restart -------------------------------------------------------------


async def test_a_full_partition_is_paused_while_other_partitions_keep_flowing(
    make_bus: BusFactory, kafka_config: KafkaConfig
) -> None:
    topic = unique("two")
    await KafkaAdmin(kafka_config).create_topics([topic], partitions=2)
    stuck = asyncio.Event()
    release = asyncio.Event()
    handled: list[str] = []

    async def handle(event: OrderPlaced, ctx: MessageContext) -> None:
        if event.aggregate_id == "stuck":
            stuck.set()
            await release.wait()
        handled.append(event.aggregate_id)

    bus = make_bus(order_registry(), max_in_flight=20)
    consumer = bus.subscribe(topic, handle)
    await bus.start()
    await consumer.wait_assigned()
    reports = [await bus.publish(topic, placed("stuck", seq=i)) for i in range(40)]
    stuck_partition = reports[0].partition
    await asyncio.wait_for(stuck.wait(), 30)
    await eventually(lambda: consumer._pending.get((topic, stuck_partition), 0) >= 10)
    # Only now the other partition gets records: the stuck one is at its limit.
    others: list[str] = []
    n = 0
    while len(others) < 30:
        key = f"other-{n}"
        n += 1
        if (await bus.publish(topic, placed(key))).partition != stuck_partition:
            others.append(key)
    await eventually(lambda: set(others) <= set(handled), timeout=30)
    assert (topic, stuck_partition) in consumer._paused
    assert consumer._pending[(topic, stuck_partition)] <= 40
    release.set()
    await eventually(lambda: handled.count("stuck") == 40, timeout=30)
    await eventually(lambda: _lag_is_zero(kafka_config, consumer.group_id, topic))
    assert not consumer._paused


async def test_stop_finishes_within_drain_timeout_even_when_the_in_flight_limit_is_full(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig
) -> None:
    started, cancelled = [], []
    hang = asyncio.Event()

    async def handle(event: OrderPlaced) -> None:
        started.append(event.aggregate_id)
        try:
            await hang.wait()
        except asyncio.CancelledError:
            cancelled.append(event.aggregate_id)
            raise

    bus = make_bus(order_registry(), max_in_flight=3, drain_timeout=1.0)
    consumer = bus.subscribe(topic, handle)
    await bus.start()
    await consumer.wait_assigned()
    await bus.publish_many(topic, [placed(f"o-{i}") for i in range(12)])
    await eventually(lambda: len(started) >= 3)
    began = time.monotonic()
    await asyncio.wait_for(consumer.stop(), 15)
    assert time.monotonic() - began < 10
    assert sorted(cancelled) == sorted(started)
    assert not consumer.running


async def test_stop_passes_on_a_cancellation_it_did_not_cause(
    make_bus: BusFactory, topic: str
) -> None:
    started = asyncio.Event()

    async def handle(event: OrderPlaced) -> None:
        started.set()
        await asyncio.Event().wait()

    bus = make_bus(order_registry(), drain_timeout=60.0)
    consumer = bus.subscribe(topic, handle)
    await bus.start()
    await consumer.wait_assigned()
    await bus.publish(topic, placed("o-hang"))
    await asyncio.wait_for(started.wait(), 30)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0.5)
    stopping.cancel()
    done, _ = await asyncio.wait([stopping], timeout=15)
    assert done and stopping.cancelled(), "stop() swallowed its caller's cancellation"
    assert not consumer.running and consumer._client is None


async def test_a_stopped_consumer_starts_again(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig
) -> None:
    seen: list[str] = []

    async def handle(event: OrderPlaced) -> None:
        seen.append(event.aggregate_id)

    bus = make_bus(order_registry())
    consumer = bus.subscribe(topic, handle)
    await bus.start()
    await consumer.wait_assigned()
    await bus.publish(topic, placed("before"))
    await eventually(lambda: seen == ["before"])
    await consumer.stop()
    await bus.publish(topic, placed("between"))
    await consumer.start()
    await consumer.wait_assigned()
    await bus.publish(topic, placed("after"))
    await eventually(lambda: seen == ["before", "between", "after"])


async def test_lost_partitions_cancel_their_handlers_at_once(
    make_bus: BusFactory, topic: str
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handle(event: OrderPlaced) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    bus = make_bus(order_registry(), drain_timeout=60.0)
    consumer = bus.subscribe(topic, handle)
    await bus.start()
    await consumer.wait_assigned()
    await bus.publish(topic, placed("o-lost"))
    await asyncio.wait_for(started.wait(), 30)
    owned = sorted(consumer._owned)
    # librdkafka calls this on its thread when the member was thrown out of the group.
    await asyncio.to_thread(consumer._on_lost, owned)
    assert cancelled.is_set(), "a lost partition's handler kept running"
    assert not consumer._owned and not consumer._workers


async def test_an_error_the_consumer_cannot_recover_from_stops_it(
    make_bus: BusFactory, topic: str
) -> None:
    async def handle(event: OrderPlaced) -> None:
        pass

    member = unique("static")
    first = make_bus(order_registry(), **{"group.instance.id": member})
    group = first.config.consumer_group
    fenced = first.subscribe(topic, handle)
    await first.start()
    await fenced.wait_assigned()
    second = make_bus(order_registry(), group=group, **{"group.instance.id": member})
    usurper = second.subscribe(topic, handle)
    await second.start()
    await usurper.wait_assigned()
    await eventually(lambda: fenced.failure is not None, timeout=60)
    assert isinstance(fenced.failure, ConsumerFailedError)
    assert not fenced.running
    with pytest.raises(ConsumerFailedError):
        await fenced.wait_assigned(timeout=1)


async def test_librdkafka_logs_go_through_logging(
    kafka_config: KafkaConfig, caplog: pytest.LogCaptureFixture
) -> None:
    dead = KafkaConfig("127.0.0.1:1", unique("c"), unique("g"))  # nothing listens there
    producer = KafkaProducer(dead)
    with caplog.at_level(logging.INFO, logger="librdkafka"):
        await producer.start()
        try:
            await eventually(lambda: [r for r in caplog.records if r.name == "librdkafka"],
                             timeout=20)
        finally:
            await producer.stop(timeout=1)


async def test_dlq_list_json_reads_type_and_id_from_the_body_when_headers_lack_them(
    make_bus: BusFactory, topic: str, kafka_config: KafkaConfig
) -> None:
    async def book(event: OrderPlaced) -> None:
        pass

    bus = make_bus(order_registry())
    consumer = bus.subscribe(topic, book)
    await bus.start()
    await consumer.wait_assigned()
    bare = (b'{"event_type": "order.placed", "event_version": 2, '
            b'"event_id": "0b7c0a3e-2f7a-4d55-9d1e-1c2b3a4d5e6f", "data": {}}')
    await _produce_raw(kafka_config, topic, [(bare, b"k", [])])  # no headers at all
    await eventually(lambda: dlq.list_dead_letters(kafka_config, topic), interval=0.2)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_config.bootstrap_servers}
    listing = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "core", "dlq", "list", topic, "--json"],
        env=env, capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    (letter,) = json.loads(listing.stdout)
    assert letter["event_type"] == "order.placed"
    assert letter["event_id"] == "0b7c0a3e-2f7a-4d55-9d1e-1c2b3a4d5e6f"
    assert letter["key"] == "k" and letter["original_topic"] == topic
    assert "MalformedEventError" in letter["error_type"] and not letter["replayed"]


# --- out of the group ------------------------------------------------------------------------

QUICK_SESSION = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
"""The broker's shortest allowed session (group.min.session.timeout.ms), for drills that wait
one out."""


async def test_a_member_left_out_of_its_group_with_records_waiting_rejoins(
    make_bus: BusFactory, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A member that is out of its group while records wait (here its client unsubscribed
    behind its back, as a librdkafka client whose coordinator connection never comes back
    stays out) is marked stranded after a session timeout, with a log line, then rejoins
    with a fresh client and handles what waited."""
    seen: list[str] = []

    async def handle(event: OrderPlaced) -> None:
        seen.append(event.data.order_id)

    bus = make_bus(order_registry(), rejoin_after=12.0, **QUICK_SESSION)
    consumer = bus.subscribe(topic, handle)
    await bus.start()
    await consumer.wait_assigned()
    await bus.publish(topic, placed("before"))
    await eventually(lambda: seen == ["before"])
    stuck = consumer._client
    assert stuck is not None and consumer.stranded is None
    await stuck._call(stuck._consumer.unsubscribe)  # type: ignore[union-attr]
    await eventually(lambda: not consumer._owned)  # revoked within the next poll
    await bus.publish(topic, placed("waiting"))
    with caplog.at_level(logging.ERROR, logger="core.messaging.consumer"):
        reason = await eventually(lambda: consumer.stranded, timeout=20)
    assert f"out of group {consumer.group_id}" in reason and "1 records waiting" in reason
    assert any("out of its group" in r.getMessage() for r in caplog.records)
    assert seen == ["before"], "a stranded member handled a record"
    await eventually(lambda: seen == ["before", "waiting"], timeout=30)
    assert consumer.rejoins == 1 and consumer._client is not stuck
    await eventually(lambda: consumer.stranded is None, timeout=10)
    await bus.publish(topic, placed("after"))
    await eventually(lambda: seen == ["before", "waiting", "after"])


async def test_a_spare_member_without_partitions_is_not_stranded(
    make_bus: BusFactory, kafka_config: KafkaConfig
) -> None:
    """More members than partitions: the one left without any is a spare while the other
    owns every partition, even with records waiting there; it never rejoins."""
    name = unique("single")
    await KafkaAdmin(kafka_config).create_topics([name], partitions=1)
    release = asyncio.Event()

    async def slow(event: OrderPlaced) -> None:
        await release.wait()

    group = unique("group")
    owner = make_bus(order_registry(), group=group, rejoin_after=8.0, **QUICK_SESSION)
    spare = make_bus(order_registry(), group=group, rejoin_after=8.0, **QUICK_SESSION)
    first = owner.subscribe(name, slow)
    second = spare.subscribe(name, slow)
    await owner.start()
    await first.wait_assigned()
    await spare.start()
    await asyncio.sleep(2)  # the spare joins; cooperative-sticky leaves the partition where it is
    assert first._owned and not second._owned
    await owner.publish(name, placed("a"))
    await owner.publish(name, placed("b"))  # waits behind "a", which is held
    await asyncio.sleep(20)
    release.set()
    assert second.stranded is None and second.rejoins == 0


async def test_every_group_comes_back_after_the_broker_is_frozen_past_its_session(
    make_bus: BusFactory, kafka: Any, kafka_config: KafkaConfig, tmp_path: Any
) -> None:
    """The broker process frozen (SIGSTOP) for longer than the session timeout while
    handlers of each kind are in flight: through the inbox on two topics, and plain on one.
    Both groups lose their partitions, are assigned again once it returns, and every event
    is handled, through the inbox exactly once."""


    a, b = unique("inbox-a"), unique("inbox-b")
    plain_topic = unique("plain")
    await KafkaAdmin(kafka_config).create_topics([a, b, plain_topic], partitions=3)
    db = await create_schema(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    busy = asyncio.Event()

    async def apply(event: MoneyDeposited, ctx: MessageContext) -> None:
        busy.set()
        await asyncio.sleep(1.0)  # in flight when the broker freezes
        await ctx.session.execute(insert(effects).values(
            event_id=str(event.event_id), account_id=event.data.account_id,
            seq=event.data.seq))

    plain_seen: list[int] = []

    async def count(event: MoneyDeposited) -> None:
        await asyncio.sleep(0.5)
        plain_seen.append(event.data.seq)

    inbox_bus = make_bus(registry(), idempotency=DatabaseIdempotencyStore(db, metadata),
                         rejoin_after=15.0, **QUICK_SESSION)
    plain_bus = make_bus(registry(), rejoin_after=15.0, **QUICK_SESSION)
    inbox = inbox_bus.subscribe([a, b], apply)
    plain = plain_bus.subscribe(plain_topic, count)
    await inbox_bus.start()
    await plain_bus.start()
    await inbox.wait_assigned()
    await plain.wait_assigned()
    for i in range(6):
        await inbox_bus.publish(a, deposit(f"a-{i}", i))
        await inbox_bus.publish(b, deposit(f"b-{i}", i))
        await plain_bus.publish(plain_topic, deposit(f"p-{i}", i))
    await asyncio.wait_for(busy.wait(), 30)
    os.kill(kafka.pid, signal.SIGSTOP)
    try:
        await eventually(lambda: not inbox._owned and not plain._owned, timeout=30)
        await asyncio.sleep(4)
    finally:
        os.kill(kafka.pid, signal.SIGCONT)
    for i in range(6, 10):
        await inbox_bus.publish(a, deposit(f"a-{i}", i))
        await inbox_bus.publish(b, deposit(f"b-{i}", i))
        await plain_bus.publish(plain_topic, deposit(f"p-{i}", i))
    await eventually(lambda: inbox._owned and plain._owned, timeout=60)

    async def applied() -> list[str]:
        async with db.session() as session:
            return list((await session.execute(select(effects.c.event_id))).scalars())

    await eventually(lambda: len(set(plain_seen)) == 10, timeout=60)
    rows = await eventually(lambda: _twenty(applied), timeout=60)
    assert len(rows) == len(set(rows)) == 20, "an event's effect was applied twice"
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(effects)) == 20
    await db.dispose()


async def _twenty(applied: Any) -> list[str] | None:
    rows: list[str] = await applied()
    return rows if len(rows) >= 20 else None
