"""The transactional outbox's own logic on SQLite, relaying to a stand-in producer
(tests/unit/fake_producer.py): commit together, order per key, acknowledgements recorded,
retries, parking and what a parked row holds back, `requeue` / `discard`, purge, `stop()`.
The same against real Kafka and PostgreSQL: tests/integration/test_outbox.py."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import insert, select, update

from core import correlation
from core.config import KafkaConfig
from core.db.engine import Database
from core.messaging.errors import DeliveryTimeoutError, PublishError, UnknownTopicError
from core.messaging.outbox import (
    RELAY_PRODUCER,
    OutboxRelay,
    OutboxWriter,
    discard,
    parked,
    relay_producer,
    requeue,
)
from core.messaging.outbox.store import aware
from core.messaging.serialization import EventSerializer
from core.messaging.types import HEADER_CAUSATION_ID, HEADER_CORRELATION_ID, Record
from tests.helpers import eventually
from tests.outbox_service import accounts, create_schema, deposit, metadata, registry
from tests.unit.fake_producer import FakeProducer

TOPIC, OTHER = "accounts", "audit"
outbox = metadata.tables["outbox"]
serializer = EventSerializer(registry())


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """SQLite returns rows in id order even without ORDER BY, which would hide a query that
    forgot it (PostgreSQL does not: an updated row moves in its table). Here unordered
    SELECTs come back reversed, so such a query shows."""
    database = await create_schema(f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}")
    sa_event.listen(database.engine.sync_engine, "connect", _unordered_selects_reversed)
    await database.engine.dispose()  # connections opened from now on have it
    yield database
    await database.dispose()


def _unordered_selects_reversed(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA reverse_unordered_selects = ON")
    cursor.close()


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer([TOPIC, OTHER])


def relay(db: Database, producer: FakeProducer, **options: Any) -> OutboxRelay:
    options.setdefault("owner", "r1")
    options.setdefault("drain_timeout", 1.0)  # a broken stop() fails the test in a second
    return OutboxRelay(db, producer, metadata, **options)  # type: ignore[arg-type]


async def write(db: Database, *events: tuple[str, str | None, int], topic: str = TOPIC,
                writer: OutboxWriter | None = None) -> None:
    """One row per `(account, key, seq)`, in one transaction; `key` None: the account id."""
    writer = writer or OutboxWriter(metadata, serializer)
    async with db.transaction() as session:
        for account, key, seq in events:
            await writer.add(session, topic, deposit(account, seq), key=key)


def seqs(records: Sequence[Record]) -> list[tuple[str | None, int]]:
    out = []
    for r in records:
        event = serializer.deserialize(r.value, r.headers)
        out.append((r.key.decode() if r.key is not None else None, event.data.seq))  # type: ignore[attr-defined]
    return out


async def rows(db: Database) -> list[Any]:
    async with db.session() as session:
        return list((await session.execute(select(outbox).order_by(outbox.c.id))).all())


SOON = 5.0  # bounded: a failing test (or a mutant) ends in seconds, not 30


def by_key(key: str) -> Any:
    return lambda r: r.key == key.encode()


# -- the writer --------------------------------------------------------------------------------
async def test_state_change_and_event_commit_or_roll_back_together(db: Database) -> None:
    writer, wakeups = OutboxWriter(metadata, serializer), []
    writer.on_commit(lambda: wakeups.append("relay"))
    async with db.transaction() as session:
        await session.execute(insert(accounts).values(id="a-1", balance=10))
        await writer.add(session, TOPIC, deposit("a-1", 0))
        await writer.add(session, TOPIC, deposit("a-1", 1))
        assert wakeups == []  # not before the commit
    assert wakeups == ["relay"]  # once per transaction, not per event
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as session:
            await session.execute(insert(accounts).values(id="a-2", balance=10))
            await writer.add(session, TOPIC, deposit("a-2", 0))
            raise RuntimeError("boom")
    assert wakeups == ["relay"]
    async with db.session() as session:
        assert (await session.execute(select(accounts.c.id))).scalars().all() == ["a-1"]
    stored = await rows(db)
    assert [(r.topic, r.key, r.event_type, r.attempts, r.published_at) for r in stored] == [
        (TOPIC, "a-1", "account.deposited", 0, None)] * 2
    event = serializer.deserialize(stored[1].payload, [
        (name, value.encode()) for name, value in stored[1].headers])
    assert event.data.seq == 1  # type: ignore[attr-defined]
    assert stored[0].event_id != stored[1].event_id and stored[0].created_at is not None
    async with db.transaction() as session:  # a later transaction wakes the relay again
        await writer.add(session, TOPIC, deposit("a-3", 0), key="chosen")
    assert wakeups == ["relay", "relay"]
    assert (await rows(db))[-1].key == "chosen"


async def test_an_event_written_while_ids_are_bound_carries_them_unless_it_names_its_own(
        db: Database) -> None:
    """In the envelope and in the record headers alike, so tools reading either agree."""
    own = deposit("a-2", 0).model_copy(update={"correlation_id": "mine",
                                               "causation_id": "my-cause"})
    async with db.transaction() as session:
        with correlation.bound("req-1", "evt-1"):
            await OutboxWriter(metadata, serializer).add(session, TOPIC, deposit("a-1", 0))
            await OutboxWriter(metadata, serializer).add(session, TOPIC, own)
        await OutboxWriter(metadata, serializer).add(session, TOPIC, deposit("a-3", 0))
    found = []
    for row in await rows(db):
        headers = [(name, value.encode()) for name, value in row.headers]
        event = serializer.deserialize(row.payload, headers)
        found.append((event.correlation_id, event.causation_id,
                      dict(headers).get(HEADER_CORRELATION_ID),
                      dict(headers).get(HEADER_CAUSATION_ID)))
    assert found == [("req-1", "evt-1", b"req-1", b"evt-1"),
                     ("mine", "my-cause", b"mine", b"my-cause"),
                     (None, None, None, None)]


async def test_created_at_is_utc_whatever_the_machine_s_time_zone(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")  # hours from UTC, so a local time shows
    time.tzset()
    try:
        async with db.transaction() as session:
            await OutboxWriter(metadata, serializer).add(session, TOPIC, deposit("a-1", 0))
    finally:
        monkeypatch.undo()
        time.tzset()
    [stored] = await rows(db)
    created = stored.created_at  # SQLite keeps no zone: what it holds must be UTC
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=1)


async def test_a_session_used_for_two_transactions_wakes_the_relay_after_each(
    db: Database,
) -> None:
    writer, wakeups = OutboxWriter(metadata, serializer), []
    writer.on_commit(lambda: wakeups.append("relay"))
    writer.on_commit(lambda: wakeups.append("other relay"))
    async with db.sessions() as session:
        async with session.begin():
            await writer.add(session, TOPIC, deposit("a", 0))
        async with session.begin():
            await writer.add(session, TOPIC, deposit("a", 1))
    assert wakeups == ["relay", "other relay"] * 2
    assert len(await rows(db)) == 2
    async with db.sessions() as session:  # a transaction that adds no event wakes nobody
        async with session.begin():
            await writer.add(session, TOPIC, deposit("a", 2))
        async with session.begin():
            await session.execute(insert(accounts).values(id="a", balance=1))
    assert wakeups == ["relay", "other relay"] * 3


async def test_nobody_to_wake_is_fine(db: Database) -> None:
    await write(db, ("a", None, 0))
    assert len(await rows(db)) == 1


# -- publishing --------------------------------------------------------------------------------
async def test_rows_go_out_in_order_per_key_and_are_recorded_sent(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, ("a", None, 0), ("b", None, 0), ("a", None, 1), ("a", None, 2))
    r = relay(db, producer)
    assert await r.backlog() == 4
    assert await r.publish_batch() == 4
    assert seqs(producer.published(TOPIC)) == [("a", 0), ("b", 0), ("a", 1), ("a", 2)]
    first = producer.published(TOPIC)[0]
    assert first.value == (await rows(db))[0].payload
    assert dict(first.headers)["event_type"] == b"account.deposited"
    assert all(row.published_at is not None for row in await rows(db))
    assert await r.backlog() == 0 and r.published_total == 4 and r.in_flight == 0
    assert await r.publish_batch() == 0  # nothing is sent twice
    assert len(producer.handed) == 4


async def test_a_batch_takes_at_most_batch_size_rows_oldest_first(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, *[(f"k{i}", None, i) for i in range(5)])
    r = relay(db, producer, batch_size=2)
    assert await r.publish_batch() == 2
    assert [k for k, _ in seqs(producer.published(TOPIC))] == ["k0", "k1"]
    assert await r.publish_batch() == 2
    assert await r.publish_batch() == 1
    assert [s for _, s in seqs(producer.published(TOPIC))] == [0, 1, 2, 3, 4]


async def test_a_failure_that_heals_is_retried_and_never_parks(
    db: Database, producer: FakeProducer, caplog: pytest.LogCaptureFixture
) -> None:
    producer.refuse(by_key("a"), PublishError("broker away"), times=3)
    await write(db, ("a", None, 0), ("b", None, 0), ("k", "", 0))
    await write(db, ("n", None, 0), topic=OTHER)
    r = relay(db, producer, max_attempts=1)
    with caplog.at_level(logging.ERROR, "core.messaging.outbox"):
        assert await r.publish_batch() == 3
        failed = (await rows(db))[0]
        assert failed.published_at is None and failed.attempts == 0  # heals: never counts
        assert "broker away" in failed.last_error
        assert await r.publish_batch() == 0
        assert await r.publish_batch() == 0
    assert await parked(db, metadata, max_attempts=1) == []
    assert parking(caplog) == []  # nor is it reported parked
    assert await r.publish_batch() == 1
    assert seqs(producer.published(TOPIC)) == [("b", 0), ("", 0), ("a", 0)]
    assert seqs(producer.published(OTHER)) == [("n", 0)]


async def test_later_rows_of_a_failing_key_wait_while_other_keys_flow(
    db: Database, producer: FakeProducer
) -> None:
    producer.refuse(by_key("a"), PublishError("too large", permanent=True), on_enqueue=True,
                    times=1)
    await write(db, ("a", None, 0), ("a", None, 1), ("b", None, 0))
    await write(db, ("a", None, 0), topic=OTHER)  # the same key on another topic
    await write(db, ("x", None, 5), ("y", None, 6))
    async with db.transaction() as session:  # keyless rows
        await session.execute(update(outbox).where(outbox.c.id > 4).values(key=None))
    r = relay(db, producer)
    assert await r.publish_batch() == 4
    # a:1 was never handed over: it would have overtaken a:0
    assert [(x.topic, x.key) for x in producer.handed] == [
        (TOPIC, b"b"), (OTHER, b"a"), (TOPIC, None), (TOPIC, None)]
    assert (await rows(db))[0].attempts == 1
    await write(db, ("a", None, 1), topic=OTHER)  # key a of another topic is not held
    assert await r.publish_batch() == 2  # a:0 retried; a:1 waits behind it
    assert seqs(producer.published(OTHER)) == [("a", 0), ("a", 1)]
    assert await r.publish_batch() == 1
    assert seqs(producer.published(TOPIC))[-2:] == [("a", 0), ("a", 1)]


def parking(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "parked" in r.getMessage()]


async def test_a_row_refused_for_good_is_parked_and_holds_its_key_until_requeued(
    db: Database, producer: FakeProducer, caplog: pytest.LogCaptureFixture
) -> None:
    producer.refuse(by_key("a"), PublishError("too large", permanent=True), times=2)
    await write(db, ("a", None, 0), ("b", None, 0))
    r = relay(db, producer, max_attempts=2)
    with caplog.at_level(logging.ERROR, "core.messaging.outbox"):
        assert await r.publish_batch() == 1
        assert parking(caplog) == []  # one attempt of two: not parked yet
        await write(db, ("a", None, 1), ("a", None, 2), ("c", None, 0))
        assert await r.publish_batch() == 1  # c; a:0 fails again and parks; a:1, a:2 wait
        assert parking(caplog) == [  # the incident is logged once, when it starts
            "outbox: event row 1 parked after 2 attempts, holding back the later rows of key "
            "'a' on accounts: too large"]
    assert await r.publish_batch() == 0
    assert seqs(producer.published(TOPIC)) == [("b", 0), ("c", 0)]
    [stuck] = await parked(db, metadata, max_attempts=2)
    assert (stuck.id, stuck.key, stuck.topic, stuck.attempts, stuck.held) == (1, "a", TOPIC, 2, 2)
    assert "too large" in stuck.last_error and stuck.event_type == "account.deposited"
    assert stuck.created_at.tzinfo is not None
    assert await parked(db, metadata, max_attempts=3) == []  # not parked at 3 attempts
    assert await r.backlog() == 3

    assert await requeue(db, metadata, [999], max_attempts=2) == 0
    assert await requeue(db, metadata, max_attempts=2) == 1
    assert await r.publish_batch() == 3
    assert seqs(producer.published(TOPIC))[-3:] == [("a", 0), ("a", 1), ("a", 2)]
    assert await parked(db, metadata, max_attempts=2) == []


async def test_requeue_and_discard_act_only_on_the_rows_named_and_parked(
    db: Database, producer: FakeProducer
) -> None:
    refused = {b"a", b"b"}
    producer.refuse(lambda rec: rec.key in refused, PublishError("no", permanent=True))
    await write(db, ("a", None, 0), ("b", None, 0), ("c", None, 0))
    r = relay(db, producer, max_attempts=1)
    assert await r.publish_batch() == 1  # c
    await write(db, ("a", None, 1), ("b", None, 1))
    assert await r.publish_batch() == 0
    assert [(p.id, p.held) for p in await parked(db, metadata, max_attempts=1)] == [
        (1, 1), (2, 1)]
    assert await discard(db, metadata, [3, 4], max_attempts=1) == 0  # sent; not parked
    assert await requeue(db, metadata, [2], max_attempts=1) == 1  # b:0 only
    assert [(p.id, p.attempts) for p in await parked(db, metadata, max_attempts=1)] == [(1, 1)]
    assert await r.publish_batch() == 0  # b:0 refused again, parked again
    assert await discard(db, metadata, [1], max_attempts=1) == 1
    assert [row.id for row in await rows(db)] == [2, 3, 4, 5]
    refused.discard(b"a")
    assert await r.publish_batch() == 1  # a:1, which a:0 held back
    assert seqs(producer.published(TOPIC)) == [("c", 0), ("a", 1)]
    assert await discard(db, metadata, [2], max_attempts=1) == 1
    assert await r.publish_batch() == 0  # b:1 refused like every b
    assert [p.id for p in await parked(db, metadata, max_attempts=1)] == [5]
    assert await discard(db, metadata, [], max_attempts=1) == 0


async def test_parked_counts_only_the_unpublished_later_rows_of_its_own_topic_and_key(
    db: Database, producer: FakeProducer
) -> None:
    producer.refuse(lambda rec: rec.key == b"a" and rec.offset == 0,
                    PublishError("too large", permanent=True))
    producer.refuse(lambda rec: rec.topic == OTHER, PublishError("away"))
    await write(db, ("a", None, 0), ("a", None, 1))  # a:1 goes out with it
    r = relay(db, producer, max_attempts=1)
    assert await r.publish_batch() == 1
    await write(db, ("a", None, 2), ("b", None, 0))
    await write(db, ("a", None, 0), topic=OTHER)  # same key, other topic, failing
    await r.publish_batch()
    [stuck] = await parked(db, metadata, max_attempts=1)
    event_id = (await rows(db))[0].event_id
    assert (stuck.id, stuck.event_id, stuck.held) == (1, event_id, 1)


async def test_a_row_sent_after_a_refusal_is_not_parked(
    db: Database, producer: FakeProducer
) -> None:
    producer.refuse(by_key("a"), PublishError("too large", permanent=True), times=1)
    await write(db, ("a", None, 0))
    r = relay(db, producer, max_attempts=3)
    await r.publish_batch()
    await r.publish_batch()
    assert seqs(producer.published(TOPIC)) == [("a", 0)]
    assert await parked(db, metadata, max_attempts=1) == []  # published, though refused once


async def test_parked_rows_come_oldest_first(db: Database, producer: FakeProducer) -> None:
    producer.refuse(lambda rec: True, PublishError("no", permanent=True))
    await write(db, ("z", None, 0), topic=OTHER)
    await write(db, ("a", None, 0))
    await relay(db, producer, max_attempts=1).publish_batch()
    assert [(p.id, p.topic) for p in await parked(db, metadata, max_attempts=1)] == [
        (1, OTHER), (2, TOPIC)]


async def test_a_long_error_is_cut_to_2000_characters(
    db: Database, producer: FakeProducer
) -> None:
    producer.refuse(lambda rec: True, PublishError("x" * 5000))
    await write(db, ("a", None, 0))
    await relay(db, producer).publish_batch()
    assert (await rows(db))[0].last_error == "x" * 2000


def test_times_read_back_from_sqlite_are_utc_and_aware_ones_are_kept() -> None:
    naive = datetime(2026, 1, 1, 12, 0)
    assert aware(naive) == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    paris = datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert aware(paris) is paris


async def test_rows_to_a_missing_topic_are_parked_and_other_topics_flow(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, ("a", None, 0), topic="nowhere")
    await write(db, ("a", None, 0), ("a", None, 1))
    r = relay(db, producer, max_attempts=2)
    assert await r.publish_batch() == 2
    assert await r.publish_batch() == 0
    [stuck] = await parked(db, metadata, max_attempts=2)
    assert stuck.topic == "nowhere" and "does not exist" in stuck.last_error
    assert seqs(producer.published(TOPIC)) == [("a", 0), ("a", 1)]


async def test_whether_a_timeout_or_unknown_topic_counts_is_decided_by_fresh_metadata(
    db: Database, producer: FakeProducer
) -> None:
    r = relay(db, producer)
    producer.refuse(lambda rec: True, DeliveryTimeoutError("timed out"), times=1)
    await write(db, ("a", None, 0))
    await r.publish_batch()
    assert ((await rows(db))[0].attempts, producer.metadata_asks) == (0, [TOPIC])  # exists
    assert (await rows(db))[0].last_error == "timed out"

    producer.refuse(lambda rec: True, UnknownTopicError("stale view", permanent=True),
                    times=2)
    await r.publish_batch()
    assert (await rows(db))[0].attempts == 0  # the topic exists by now
    assert (await rows(db))[0].last_error == "stale view"
    producer.metadata_down = True
    await r.publish_batch()
    assert (await rows(db))[0].attempts == 1  # cannot tell: the error's own permanence
    assert "stale view" in (await rows(db))[0].last_error

    producer.topics.discard(TOPIC)
    producer.refuse(lambda rec: True, DeliveryTimeoutError("timed out"), times=2)
    await r.publish_batch()
    assert (await rows(db))[0].attempts == 1  # metadata down: a timeout heals
    producer.metadata_down = False
    await r.publish_batch()
    row = (await rows(db))[0]
    assert row.attempts == 2 and "the topic does not exist" in row.last_error
    asks = len(producer.metadata_asks)
    await write(db, ("b", None, 0), ("c", None, 0))
    producer.refuse(lambda rec: True, DeliveryTimeoutError("timed out"), times=3)
    await r.publish_batch()
    assert len(producer.metadata_asks) == asks + 1  # one question per topic per recording


async def test_a_report_that_is_no_publish_error_never_parks(
    db: Database, producer: FakeProducer
) -> None:
    producer.refuse(by_key("a"), RuntimeError("odd"), times=1)
    producer.refuse(by_key("b"), asyncio.CancelledError(), times=1)
    await write(db, ("a", None, 0), ("b", None, 0))
    r = relay(db, producer, max_attempts=1)
    assert await r.publish_batch() == 0
    stored = await rows(db)
    assert [(x.attempts, x.published_at) for x in stored] == [(0, None), (0, None)]
    assert "not acknowledged: odd" in stored[0].last_error
    assert stored[1].last_error == "not acknowledged: cancelled"
    assert await r.publish_batch() == 2


async def test_unacknowledged_rows_stay_in_flight_and_hold_back_only_their_key(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, ("a", None, 0), ("b", None, 0))
    r = relay(db, producer)
    producer.hold()
    assert await r.publish_batch(ack_wait=0.05) == 0
    assert r.in_flight == 2
    await write(db, ("a", None, 1), ("c", None, 0))
    producer.release()
    producer.hold()
    assert await r.publish_batch(ack_wait=0.05) == 2  # a:0 and b:0 recorded on the way
    assert [x.key for x in producer.handed] == [b"a", b"b", b"a", b"c"]
    producer.release()
    assert await r.publish_batch(ack_wait=None) == 2
    assert seqs(producer.published(TOPIC)) == [("a", 0), ("b", 0), ("a", 1), ("c", 0)]
    assert await r.publish_batch() == 0


async def test_a_key_in_flight_is_not_sent_again_nor_overtaken(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, ("a", None, 0))
    r = relay(db, producer)
    producer.hold()
    await r.publish_batch(ack_wait=0.01)
    await write(db, ("a", None, 1), ("b", None, 0), ("c", None, 0))
    async with db.transaction() as session:
        await session.execute(update(outbox).where(outbox.c.id == 3).values(key=None))
    await write(db, ("a", None, 0), topic=OTHER)
    await r.publish_batch(ack_wait=0.01)
    # a:1 waits for a:0; the keyless row, another key, and key a of another topic go
    assert [(x.topic, x.key, x.offset) for x in producer.handed] == [
        (TOPIC, b"a", 0), (TOPIC, None, 1), (TOPIC, b"c", 2), (OTHER, b"a", 3)]


async def test_in_flight_rows_are_bounded(db: Database, producer: FakeProducer) -> None:
    await write(db, *[(f"k{i}", None, i) for i in range(5)])
    r = relay(db, producer, batch_size=10, max_in_flight=3)
    producer.hold()
    await r.publish_batch(ack_wait=0.01)
    assert r.in_flight == 3
    await r.publish_batch(ack_wait=0.01)
    assert r.in_flight == 3 and len(producer.handed) == 3
    producer.release()
    await asyncio.sleep(0)
    assert await r.publish_batch() == 5


async def test_the_last_free_place_in_flight_is_used(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, *[(f"k{i}", None, i) for i in range(5)])
    r = relay(db, producer, batch_size=2, max_in_flight=3)
    producer.hold()
    await r.publish_batch(ack_wait=0.01)
    assert r.in_flight == 2
    await r.publish_batch(ack_wait=0.01)  # room for one
    assert r.in_flight == 3 and [x.key for x in producer.handed] == [b"k0", b"k1", b"k2"]


async def test_ack_wait_bounds_the_wait_and_counts_every_report_that_arrives_within_it(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, ("a", None, 0), ("b", None, 0))
    r = relay(db, producer)
    producer.hold()
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, producer.release, by_key("a"))
    loop.call_later(0.15, producer.release, by_key("b"))
    assert await r.publish_batch(ack_wait=2.0) == 2  # two arrivals, recorded as they come
    await write(db, ("c", None, 0))
    enqueue = producer.enqueue

    async def reported_soon_after(*args: Any, **options: Any) -> Any:
        ack = await enqueue(*args, **options)
        # the report follows the hand-over by 0.2 s: timed from here, not from before the
        # batch's reads, which a loaded machine can stretch past any short timer
        loop.call_later(0.2, producer.release)
        return ack

    producer.enqueue = reported_soon_after  # type: ignore[method-assign]
    assert await r.publish_batch(ack_wait=0) == 0  # ack_wait=0 waits for nothing
    assert r.in_flight == 1
    await asyncio.sleep(0.3)  # the report arrives (its timer is due first)...
    assert await r.publish_batch(ack_wait=0) == 1  # ...and the next batch records it
    assert r.in_flight == 0


async def test_default_in_flight_bound_is_four_batches(db: Database,
                                                       producer: FakeProducer) -> None:
    assert relay(db, producer, batch_size=7).max_in_flight == 28


class Metrics:
    def __init__(self) -> None:
        self.published_calls: list[tuple[int, list[float]]] = []
        self.backlogs: list[int] = []

    def published(self, count: int, latencies: Sequence[float]) -> None:
        self.published_calls.append((count, list(latencies)))

    def backlog(self, count: int) -> None:
        self.backlogs.append(count)


async def test_metrics_hear_of_published_rows(db: Database, producer: FakeProducer) -> None:
    metrics = Metrics()
    producer.refuse(by_key("b"), PublishError("no"))
    await write(db, ("a", None, 0), ("b", None, 0))
    r = relay(db, producer, metrics=metrics)
    await r.publish_batch()
    await r.publish_batch()
    [(count, latencies)] = metrics.published_calls
    assert count == 1 and len(latencies) == 1 and 0 <= latencies[0] < 60


async def test_rows_published_longer_ago_than_the_retention_are_purged(
    db: Database, producer: FakeProducer
) -> None:
    metrics = Metrics()
    producer.refuse(by_key("stuck"), PublishError("no"))
    await write(db, ("old", None, 0), ("recent", None, 0), ("pending", None, 0),
                ("stuck", None, 0))
    now = datetime.now(UTC)
    async with db.transaction() as session:
        await session.execute(update(outbox).where(outbox.c.id == 1)
                              .values(published_at=now - timedelta(hours=3)))
        await session.execute(update(outbox).where(outbox.c.id == 2)
                              .values(published_at=now - timedelta(minutes=30)))
    r = relay(db, producer, retention=timedelta(hours=1), poll_interval=0.05, lease_ttl=0.6,
              metrics=metrics)
    await r.start()
    try:
        await eventually(lambda: producer.published(TOPIC) and metrics.backlogs, timeout=SOON,
                         interval=0.02)
        await eventually(rows_are(db, [2, 3, 4]), timeout=SOON, interval=0.02)
    finally:
        await r.stop()
    assert seqs(producer.published(TOPIC)) == [("pending", 0)]
    assert set(metrics.backlogs) == {1}


def rows_are(db: Database, ids: list[int]) -> Any:
    async def check() -> bool:
        return [row.id for row in await rows(db)] == ids
    return check


# -- running, the lease, stopping --------------------------------------------------------------


async def test_a_running_relay_wakes_on_commit_and_publishes(
    db: Database, producer: FakeProducer
) -> None:
    r = relay(db, producer, poll_interval=30.0, lease_ttl=0.6)
    writer = OutboxWriter(metadata, serializer)
    writer.on_commit(r.notify)
    await r.start()
    try:
        await eventually(lambda: r.holds_lease, timeout=SOON, interval=0.02)
        await asyncio.sleep(0.05)
        await write(db, ("a", None, 0), writer=writer)
        await eventually(lambda: len(producer.published(TOPIC)) == 1, timeout=SOON, interval=0.02)
        await eventually(lambda: r.published_total == 1, timeout=SOON, interval=0.02)
    finally:
        await r.stop()
    assert not r.lease.holding


@pytest.mark.parametrize("batch_size", [1, 2])
async def test_a_backlog_drains_batch_after_batch_without_waiting_for_the_poll(
    db: Database, producer: FakeProducer, batch_size: int
) -> None:
    await write(db, *[(f"k{i}", None, i) for i in range(7)])
    r = relay(db, producer, batch_size=batch_size, poll_interval=30.0, lease_ttl=0.6)
    await r.start()
    try:
        # batch after batch, no 30 s poll between
        await eventually(lambda: r.published_total == 7, timeout=SOON, interval=0.02)
    finally:
        await r.stop()


async def test_a_backlog_that_does_not_move_waits_for_the_poll(
    db: Database, producer: FakeProducer
) -> None:
    """With no acknowledgement coming (the broker away), handing over batch after batch
    would only fill the producer's queue: the relay waits for the next poll instead."""
    await write(db, *[(f"k{i}", None, i) for i in range(6)])
    producer.hold()
    r = relay(db, producer, batch_size=2, ack_wait=0.02, poll_interval=30.0, lease_ttl=30.0)
    await r.start()
    try:
        await eventually(lambda: r.in_flight == 2, timeout=SOON, interval=0.02)
        await asyncio.sleep(0.3)
        assert len(producer.handed) == 2
    finally:
        producer.release()
        await r.stop()


async def test_rows_committed_without_a_wake_up_are_found_by_the_poll(
    db: Database, producer: FakeProducer
) -> None:
    """Another process's writer cannot wake this relay: the poll finds its rows."""
    r = relay(db, producer, poll_interval=0.05, lease_ttl=30.0)
    await r.start()
    try:
        await eventually(lambda: r.holds_lease, timeout=SOON, interval=0.02)
        await asyncio.sleep(0.1)  # idle now
        await write(db, ("a", None, 0))  # a writer nobody told of this relay
        await eventually(lambda: r.published_total == 1, timeout=SOON, interval=0.02)
    finally:
        await r.stop()


async def test_a_running_relay_moves_on_from_a_row_never_acknowledged(
    db: Database, producer: FakeProducer, caplog: pytest.LogCaptureFixture
) -> None:
    """`ack_wait` bounds each batch: one row whose report does not come holds back its own
    key, not the relay."""
    producer.hold(by_key("a"))
    r = relay(db, producer, ack_wait=0.05, poll_interval=0.05, lease_ttl=0.6)
    with caplog.at_level(logging.WARNING, "core.messaging.outbox"):
        await r.start()
        try:
            await write(db, ("a", None, 0))
            await eventually(lambda: r.in_flight == 1, timeout=SOON, interval=0.02)
            await write(db, ("b", None, 0))
            await eventually(lambda: producer.keys(TOPIC) == ["b"], timeout=SOON, interval=0.02)
            await eventually(lambda: r.published_total == 1, timeout=SOON, interval=0.02)
        finally:
            producer.release()
            await r.stop()
    assert caplog.records == []  # healthy: no failed turn, no lost lease
    assert seqs(producer.published(TOPIC)) == [("b", 0), ("a", 0)]


async def test_a_commit_is_handed_over_while_the_previous_batch_awaits_its_reports(
    db: Database, producer: FakeProducer
) -> None:
    """A lone commit is relayed at once: it does not queue behind the acknowledgements of
    the batch in flight (30 s of `ack_wait` here), nor wait for the poll interval."""
    producer.hold(by_key("a"))
    writer = OutboxWriter(metadata, serializer)
    r = relay(db, producer, ack_wait=30.0, poll_interval=30.0, lease_ttl=30.0)
    writer.on_commit(r.notify)
    await r.start()
    try:
        await eventually(lambda: r.holds_lease, timeout=SOON, interval=0.02)
        await write(db, ("a", None, 0), writer=writer)
        await eventually(lambda: r.in_flight == 1, timeout=SOON, interval=0.02)
        await write(db, ("b", None, 0), writer=writer)
        await eventually(lambda: producer.keys(TOPIC) == ["b"], timeout=SOON, interval=0.02)
        await eventually(rows_are_sent(db, [False, True]), timeout=SOON, interval=0.02)
        with pytest.raises(RuntimeError, match="rolled back"):
            async with db.transaction() as session:  # wakes nothing, publishes nothing
                await writer.add(session, TOPIC, deposit("c", 0))
                raise RuntimeError("rolled back")
        await asyncio.sleep(0.2)
        assert [rec.key for rec in producer.handed] == [b"a", b"b"]
        producer.release()
        await eventually(rows_are_sent(db, [True, True]), timeout=SOON, interval=0.02)
    finally:
        producer.release()
        await r.stop()
    assert seqs(producer.published(TOPIC)) == [("b", 0), ("a", 0)]


async def test_a_report_arriving_after_ack_wait_wakes_the_relay_to_record_it(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, ("a", None, 0))
    producer.hold()
    r = relay(db, producer, ack_wait=0.02, poll_interval=30.0, lease_ttl=0.6)
    await r.start()
    try:
        await eventually(lambda: r.in_flight == 1, timeout=SOON, interval=0.02)
        await asyncio.sleep(0.1)  # ack_wait is over: the relay idles, for 30 s
        producer.release()
        await eventually(lambda: r.published_total == 1, timeout=SOON, interval=0.02)
        await eventually(rows_are_sent(db, [True]), timeout=SOON, interval=0.02)
    finally:
        await r.stop()


def rows_are_sent(db: Database, sent: list[bool]) -> Any:
    async def check() -> bool:
        return [row.published_at is not None for row in await rows(db)] == sent
    return check


async def test_housekeeping_runs_once_per_interval_not_on_every_poll(
    db: Database, producer: FakeProducer
) -> None:
    metrics = Metrics()
    r = relay(db, producer, poll_interval=0.02, lease_ttl=0.6, metrics=metrics)
    await r.start()
    try:
        await eventually(lambda: metrics.backlogs, timeout=SOON, interval=0.02)
        await asyncio.sleep(0.4)  # some twenty polls
        assert metrics.backlogs == [0]  # the next is due 5 s after the first
    finally:
        await r.stop()


async def test_one_relay_publishes_at_a_time_and_another_takes_over_when_it_stops(
    db: Database, producer: FakeProducer
) -> None:
    first = relay(db, producer, owner="first", poll_interval=0.05, lease_ttl=0.6)
    second = relay(db, producer, owner="second", poll_interval=0.05, lease_ttl=0.6)
    await first.start()
    await eventually(lambda: first.holds_lease, timeout=SOON, interval=0.02)
    await second.start()
    try:
        await write(db, ("a", None, 0))
        await eventually(lambda: first.published_total == 1, timeout=SOON, interval=0.02)
        assert not second.lease.holding and second.published_total == 0
        await first.stop()
        await write(db, ("a", None, 1))
        await eventually(lambda: second.published_total == 1, timeout=SOON, interval=0.02)
    finally:
        await first.stop()
        await second.stop()
    assert seqs(producer.published(TOPIC)) == [("a", 0), ("a", 1)]


async def test_a_lapsed_lease_stops_publishing_but_acknowledgements_are_still_recorded(
    db: Database, producer: FakeProducer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "core.messaging.outbox")
    r = relay(db, producer, poll_interval=0.02, lease_ttl=0.6)
    await r.start()
    try:
        await eventually(lambda: r.holds_lease, timeout=SOON, interval=0.02)
        producer.hold()
        await write(db, ("a", None, 0))
        await eventually(lambda: r.in_flight == 1, timeout=SOON, interval=0.02)
        lease = metadata.tables["outbox_lease"]
        async with db.transaction() as session:  # another relay took it while we were paused
            await session.execute(update(lease).values(
                owner="thief", expires_at=datetime.now(UTC) + timedelta(hours=1)))
        r.lease.held_until = 0.0  # the process was paused past its lease
        assert not r.holds_lease
        await write(db, ("b", None, 0))
        producer.release()
        await eventually(lambda: r.published_total == 1, timeout=SOON, interval=0.02)
        await eventually(lambda: not r.lease.holding, timeout=SOON, interval=0.02)
        await asyncio.sleep(0.2)
        assert [x.key for x in producer.handed] == [b"a"]
        assert [row.published_at is not None for row in await rows(db)] == [True, False]
    finally:
        await r.stop()
    assert caplog.records == []  # waiting without the lease is no failure


async def test_a_relay_never_started_stops_at_once(db: Database, producer: FakeProducer) -> None:
    await asyncio.wait_for(relay(db, producer).stop(), 5)


async def test_stop_records_reports_that_arrived_before_it(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, ("a", None, 0))
    r = relay(db, producer)
    producer.hold()
    assert await r.publish_batch(ack_wait=0.01) == 0
    producer.release()
    await asyncio.sleep(0.01)  # the report is in; nobody has recorded it yet
    await asyncio.wait_for(r.stop(), 5)
    assert await rows_are_sent(db, [True])()
    assert r.in_flight == 0


async def test_stop_lets_the_batch_being_handed_over_finish(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, ("a", None, 0), ("b", None, 0), ("c", None, 0))
    producer.queue_full = asyncio.Event()  # the producer's queue is full: enqueue waits
    handing_over = asyncio.Event()
    enqueue = producer.enqueue

    async def enqueue_seen(*args: Any) -> Any:
        handing_over.set()
        return await enqueue(*args)

    producer.enqueue = enqueue_seen  # type: ignore[method-assign,assignment]
    r = relay(db, producer, poll_interval=30.0, lease_ttl=0.6)
    await r.start()
    await asyncio.wait_for(handing_over.wait(), 5)  # the relay is in the middle of its batch
    stopping = asyncio.create_task(r.stop())
    await asyncio.sleep(0.05)
    producer.queue_full.set()  # room again: the batch goes out, and stop() records it
    await asyncio.wait_for(stopping, 5)
    assert producer.keys(TOPIC) == ["a", "b", "c"]
    assert await rows_are_sent(db, [True, True, True])()


async def test_an_idle_relay_stops_at_once_not_after_its_drain_timeout(
    db: Database, producer: FakeProducer
) -> None:
    r = relay(db, producer, poll_interval=30.0, lease_ttl=0.6, drain_timeout=30.0)
    await r.start()
    await eventually(lambda: r.holds_lease, timeout=SOON, interval=0.02)
    await asyncio.wait_for(r.stop(), 5)  # generous; the drain timeout is 30 s


async def test_stop_drains_acknowledgements_that_arrive_within_its_timeout(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, ("a", None, 0), ("b", None, 0))
    r = relay(db, producer, poll_interval=0.02, lease_ttl=0.6, ack_wait=0.01,
              drain_timeout=0.9)  # under a second: the drain must wait, not spin
    producer.hold()
    await r.start()
    await eventually(lambda: r.in_flight == 2, timeout=SOON, interval=0.02)
    stopping = asyncio.create_task(r.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done()  # waiting for the acknowledgements
    producer.release(by_key("a"))
    await asyncio.sleep(0.1)
    assert not stopping.done()  # one came, and it waits on for the other
    producer.release()
    await asyncio.wait_for(stopping, 5)
    assert all(row.published_at is not None for row in await rows(db))
    assert r.in_flight == 0


async def test_stop_gives_up_after_its_drain_timeout_and_hands_the_lease_back(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, ("a", None, 0))
    r = relay(db, producer, poll_interval=0.02, lease_ttl=30.0, ack_wait=0.01,
              drain_timeout=0.2)
    producer.hold()
    await r.start()
    await eventually(lambda: r.in_flight == 1, timeout=SOON, interval=0.02)
    await asyncio.wait_for(r.stop(), 5)
    assert r.in_flight == 0
    assert (await rows(db))[0].published_at is None  # published again by the next relay
    other = relay(db, producer, owner="next")
    assert await other.lease.acquire()  # released, not left to expire (30 s)
    lost: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: lost.append(context["message"]))
    try:
        producer.refuse(lambda rec: True, PublishError("came back refused"))
        producer.release()  # the abandoned acknowledgement fails after the stop
        await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert lost == []  # its outcome was read: asyncio reports no lost exception


async def test_a_cancelled_stop_is_re_raised_and_leaves_the_lease_to_expire(
    db: Database, producer: FakeProducer
) -> None:
    await write(db, ("a", None, 0))
    r = relay(db, producer, poll_interval=0.02, lease_ttl=30.0, ack_wait=0.01,
              drain_timeout=30.0)
    producer.hold()
    await r.start()
    await eventually(lambda: r.in_flight == 1, timeout=SOON, interval=0.02)
    lease_keeper = r._tasks[0]
    stopping = asyncio.create_task(r.stop())
    await asyncio.sleep(0.05)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(stopping, 5)
    await asyncio.sleep(0)
    assert lease_keeper.cancelled() or lease_keeper.done()
    assert not await relay(db, producer, owner="next").lease.acquire()
    producer.release()


async def test_a_relay_stuck_on_its_database_is_cut_short_by_stop(
    db: Database, producer: FakeProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = relay(db, producer, poll_interval=0.02, lease_ttl=0.6, drain_timeout=0.2)
    await r.start()
    await eventually(lambda: r.holds_lease, timeout=SOON, interval=0.02)
    stuck = asyncio.Event()

    async def pending(limit: int) -> Any:
        stuck.set()
        await asyncio.sleep(60)

    monkeypatch.setattr(r, "_pending", pending)
    await asyncio.wait_for(stuck.wait(), 5)
    await asyncio.wait_for(r.stop(), 5)


async def test_a_failing_batch_is_retried(
    db: Database, producer: FakeProducer, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = relay(db, producer, poll_interval=0.02, lease_ttl=0.6)
    calls = []
    original = r._pending

    async def flaky(limit: int) -> Any:
        calls.append(limit)
        if len(calls) == 1:
            raise RuntimeError("database hiccup")
        return await original(limit)

    monkeypatch.setattr(r, "_pending", flaky)
    await write(db, ("a", None, 0))
    with caplog.at_level(logging.ERROR, "core.messaging.outbox"):
        await r.start()
        try:
            await eventually(lambda: r.published_total == 1, timeout=SOON, interval=0.02)
        finally:
            await r.stop()
    [failed] = caplog.records  # once, naming the relay, with the error
    assert failed.getMessage() == "outbox relay r1 failed; retrying"
    assert failed.exc_info is not None and "database hiccup" in str(failed.exc_info[1])


async def test_a_stopped_relay_hands_nothing_over(db: Database, producer: FakeProducer) -> None:
    r = relay(db, producer)
    await r.start()
    await r.stop()
    await write(db, ("a", None, 0))
    assert await r.publish_batch() == 0
    assert producer.handed == []


def test_the_relay_producer_never_times_a_record_out_whatever_it_is_asked() -> None:
    """The relay's own producer: no delivery timeout, even when the settings ask for one
    (an outage must delay a key's rows, never reorder them); other settings pass through."""
    config = KafkaConfig("127.0.0.1:1", "client", "group")
    assert RELAY_PRODUCER == {"message.timeout.ms": 0}
    producer = relay_producer(config, **{"message.timeout.ms": 3000, "linger.ms": 7})
    assert producer._conf["message.timeout.ms"] == 0
    assert producer._conf["linger.ms"] == 7
    assert producer._conf["enable.idempotence"] is True
    assert relay_producer(config)._conf["linger.ms"] == 0  # a lone commit is sent at once
    assert relay_producer(config)._conf["message.timeout.ms"] == 0
