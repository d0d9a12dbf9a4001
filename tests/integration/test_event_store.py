"""The event store on a SQLite file and a real PostgreSQL: append and read, optimistic
concurrency under real races, upcasting, snapshots, and events reaching real Kafka through
the outbox in the append's transaction."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from core import correlation
from core.config import KafkaConfig
from core.db import Database, migrations
from core.db.scaffold import init_migrations
from core.event_sourcing import (
    NO_STREAM,
    AggregateNotFoundError,
    AggregateRepository,
    DuplicateEventError,
    EventStore,
    StreamConflictError,
    UnreadableEventError,
)
from core.messaging import EventRegistry, EventSerializer, OutboxRelay
from core.messaging.kafka_client import KafkaAdmin, KafkaProducer, read_topic
from tests.event_sourced import (
    Account,
    AccountClosed,
    AmountData,
    InsufficientFundsError,
    OpenedData,
    create_schema,
    deposited,
    metadata,
    registry,
    store,
)
from tests.helpers import OrderPlacedV1, OrderPlacedV1Data, eventually, order_registry, unique

EVENTS, OUTBOX, SNAPSHOTS = (metadata.tables[name] for name in
                             ("stored_events", "outbox", "snapshots"))


MODELS = """
from sqlalchemy.orm import DeclarativeBase

from core.db import ServiceBase
from core.event_sourcing import event_store_tables
from core.messaging import messaging_tables


class Base(ServiceBase, DeclarativeBase):
    pass


event_store_tables(Base.metadata)
messaging_tables(Base.metadata, inbox=False)
"""


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await create_schema(db_url)
    yield database
    await database.dispose()


async def _count(db: Database, table: Any, *where: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(
            select(func.count()).select_from(table).where(*where)) or 0)


async def _amounts(db: Database, events: EventStore, stream_id: str) -> list[int]:
    async with db.session() as session:
        return [r.event.data.amount for r in await events.read(session, stream_id)]


# --- append and read ----------------------------------------------------------------------------


async def test_appended_events_read_back_in_order_with_their_positions(db: Database) -> None:
    events = store()
    first, second, third = deposited("1", 10), deposited("1", 20), deposited("1", 30)
    async with db.transaction() as session:
        assert await events.append(session, "account-1", [first, second], NO_STREAM) == 2
    async with db.transaction() as session:
        assert await events.append(session, "account-1", [third], 2) == 3
        await events.append(session, "account-2", [deposited("2", 99)], NO_STREAM)
    async with db.session() as session:
        stream = await events.read(session, "account-1")
        tail = await events.read(session, "account-1", after=1)
        page = await events.read(session, "account-1", limit=2)
        assert await events.version(session, "account-1") == 3
        assert await events.version(session, "nobody") == NO_STREAM
        assert await events.read(session, "nobody") == []
    assert [r.position for r in stream] == [1, 2, 3]
    assert [r.event for r in stream] == [
        e.model_copy(update={"service_name": "ledger"}) for e in (first, second, third)]
    assert {r.stream_id for r in stream} == {"account-1"}
    assert all(r.recorded_at.tzinfo is not None
               and abs((datetime.now(UTC) - r.recorded_at).total_seconds()) < 60
               for r in stream)
    assert [r.position for r in tail] == [2, 3] and [r.position for r in page] == [1, 2]


async def test_a_stale_expected_version_is_a_typed_conflict_and_writes_nothing(
        db: Database) -> None:
    events = store()
    async with db.transaction() as session:
        await events.append(session, "account-1", [deposited("1", 1), deposited("1", 2)],
                            NO_STREAM)
    cases = [
        (NO_STREAM, 1),  # "no stream yet", but there is one
        (1, 1),          # behind: position 2 taken, so nothing of the three may stay
        (1, 3),          # behind, and positions 3 and 4 free: the store removes its own
        (5, 1),          # ahead of the stream: appending would leave a gap
    ]
    for expected, count in cases:
        async with db.transaction() as session:
            with pytest.raises(StreamConflictError) as caught:
                await events.append(session, "account-1",
                                    [deposited("1", 100 + i) for i in range(count)], expected)
            assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == (
                "account-1", expected, 2)
            # the caller's transaction is still usable, and commits none of the append
            await events.append(session, "account-9", [deposited("9", 1)],
                                await events.version(session, "account-9"))
    assert await _amounts(db, events, "account-1") == [1, 2]
    assert await _count(db, EVENTS, EVENTS.c.stream_id == "account-1") == 2
    assert await _count(db, OUTBOX) == 2 + len(cases), "a refused append reached the outbox"


async def test_an_event_is_stored_once(db: Database) -> None:
    events, event = store(), deposited("1", 1)
    async with db.transaction() as session:
        await events.append(session, "account-1", [event], NO_STREAM)
    with pytest.raises(DuplicateEventError):
        async with db.transaction() as session:
            await events.append(session, "account-2", [event], NO_STREAM)
    assert await _count(db, EVENTS) == 1


# --- concurrency --------------------------------------------------------------------------------


async def test_of_concurrent_appends_to_one_stream_exactly_one_wins(db: Database) -> None:
    """Each round, four writers in their own sessions (their own connections: threads on
    SQLite, server backends on PostgreSQL) read the version, meet at a barrier, then append
    with it. Exactly one commits; the others get the conflict with the winner's version."""
    events, writers, rounds = store(), 4, 25

    async def writer(w: int, barrier: asyncio.Barrier) -> int | StreamConflictError:
        async with db.transaction() as session:
            version = await events.version(session, "account-1")
            await barrier.wait()
            try:
                return await events.append(session, "account-1",
                                           [deposited("1", w), deposited("1", w)], version)
            except StreamConflictError as conflict:
                return conflict

    for r in range(rounds):
        barrier = asyncio.Barrier(writers)
        outcomes = await asyncio.gather(*(writer(w, barrier) for w in range(writers)))
        won = [o for o in outcomes if isinstance(o, int)]
        lost = [o for o in outcomes if isinstance(o, StreamConflictError)]
        assert won == [2 * (r + 1)] and len(lost) == writers - 1, outcomes
        assert {(c.expected, c.actual) for c in lost} == {(2 * r, 2 * (r + 1))}
    amounts = await _amounts(db, events, "account-1")
    assert len(amounts) == 2 * rounds
    assert amounts[0::2] == amounts[1::2], "one append's events were interleaved with another's"
    assert await _count(db, OUTBOX) == 2 * rounds


async def test_a_writer_waiting_on_an_uncommitted_append_wins_if_that_one_rolls_back(
        db: Database) -> None:
    """The first writer's rows are not yet committed when the second appends at the same
    version: the second waits (PostgreSQL: on the primary key's row lock; SQLite: on the
    write lock) and wins only because the first rolls back."""
    events = store()
    first = db.sessions()
    await first.begin()
    await events.append(first, "account-1", [deposited("1", 1)], NO_STREAM)

    async def second() -> int:
        async with db.transaction() as session:
            return await events.append(session, "account-1", [deposited("1", 2)], NO_STREAM)

    task = asyncio.ensure_future(second())
    if db.dialect == "postgresql":  # see it wait, so the test covers the blocking path
        async def blocked() -> bool:
            async with db.session() as session:
                return bool(await session.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")))
        await eventually(blocked, timeout=10, what="the second append waiting on the first")
    assert not task.done()
    await first.rollback()
    await first.close()
    assert await asyncio.wait_for(task, 15) == 1
    assert await _amounts(db, events, "account-1") == [2]


# --- upcasting ----------------------------------------------------------------------------------


async def test_old_stored_versions_are_upcast_on_read(db: Database) -> None:
    old = EventRegistry()
    old.register(OrderPlacedV1)
    async with db.transaction() as session:
        await EventStore(metadata, EventSerializer(old)).append(session, "order-1", [
            OrderPlacedV1(aggregate_id="1", data=OrderPlacedV1Data(order_id="1", amount=7))],
            NO_STREAM)
    async with db.session() as session:
        (recorded,) = await EventStore(metadata, EventSerializer(order_registry())).read(
            session, "order-1")
        stored = (await session.execute(select(EVENTS.c.event_version))).scalar_one()
    assert recorded.event.EVENT_VERSION == 2 and stored == 1  # upcast on read, never rewritten
    assert recorded.event.data.model_dump() == {
        "order_id": "1", "amount_cents": 700, "currency": "EUR", "seq": 0}

    async with db.session() as session:
        with pytest.raises(UnreadableEventError) as caught:
            await EventStore(metadata, EventSerializer(registry())).read(session, "order-1")
    assert (caught.value.stream_id, caught.value.position) == ("order-1", 1)


# --- aggregates and snapshots -------------------------------------------------------------------


async def test_an_aggregate_saved_and_loaded_has_the_same_state(db: Database) -> None:
    accounts = AggregateRepository(store(), Account)
    account = Account.open("a1", "ann")
    account.deposit(50)
    async with db.transaction() as session:
        assert await accounts.save(session, account) == 2
    async with db.transaction() as session:
        loaded = await accounts.load(session, "a1")
        assert loaded.model_dump() == account.model_dump() and loaded.pending == ()
        loaded.withdraw(20)
        with pytest.raises(InsufficientFundsError):
            loaded.withdraw(31)
        await accounts.save(session, loaded)
    async with db.transaction() as session:
        again = await accounts.load(session, "a1")
        assert again.model_dump() == loaded.model_dump()
        assert (again.balance, again.version, again.movements) == (30, 3, [50, -20])
        with pytest.raises(AggregateNotFoundError):
            await accounts.load(session, "nobody")
        assert await accounts.find(session, "nobody") is None
        assert await accounts.save(session, again) == 3  # nothing pending: nothing written


async def test_a_concurrent_change_fails_the_save_instead_of_being_lost(db: Database) -> None:
    accounts = AggregateRepository(store(), Account)
    async with db.transaction() as session:
        await accounts.save(session, Account.open("a1", "ann"))
    async with db.session() as session:
        mine, theirs = await accounts.load(session, "a1"), await accounts.load(session, "a1")
    theirs.deposit(5)
    async with db.transaction() as session:
        await accounts.save(session, theirs)
    mine.deposit(7)
    with pytest.raises(StreamConflictError):
        async with db.transaction() as session:
            await accounts.save(session, mine)
    assert len(mine.pending) == 1
    async with db.session() as session:
        assert (await accounts.load(session, "a1")).movements == [5]


async def test_snapshot_plus_tail_equals_full_replay(db: Database) -> None:
    events = store()
    snapshotting = AggregateRepository(events, Account, snapshot_every=3)
    replaying = AggregateRepository(events, Account)
    account = Account.open("a1", "ann")
    async with db.transaction() as session:
        await snapshotting.save(session, account)  # version 1: no snapshot yet
    for amount in (10, 20, 30, 40, 50, 60, 70):  # versions 2..8: snapshots at 3 and 6
        async with db.transaction() as session:
            account = await snapshotting.load(session, "a1")
            account.deposit(amount)
            await snapshotting.save(session, account)
    async with db.session() as session:
        position = await session.scalar(select(SNAPSHOTS.c.position))
        from_snapshot = await snapshotting.load(session, "a1")
        replayed = await replaying.load(session, "a1")
    assert position == 6
    assert from_snapshot.model_dump() == replayed.model_dump() == account.model_dump()
    assert replayed.version == 8 and replayed.balance == 280

    # The snapshot is what loading read: change it behind the store's back and it shows.
    async with db.transaction() as session:
        await session.execute(update(SNAPSHOTS).values(
            state=from_snapshot.model_copy(update={"owner": "forged"}).model_dump_json()
            .encode()))
    async with db.session() as session:
        assert (await snapshotting.load(session, "a1")).owner == "forged"
        # one of another schema version, or one that no longer validates, is ignored
        await session.execute(update(SNAPSHOTS).values(schema_version=0))
        assert (await snapshotting.load(session, "a1")).model_dump() == replayed.model_dump()
        await session.execute(update(SNAPSHOTS).values(schema_version=1, state=b'{"id": 3}'))
        assert (await snapshotting.load(session, "a1")).model_dump() == replayed.model_dump()


async def test_a_snapshot_never_moves_backwards(db: Database) -> None:
    snapshots = store().snapshots
    newer, older = Account(id="a1", balance=6, version=6), Account(id="a1", balance=3, version=3)
    async with db.transaction() as session:
        await snapshots.save(session, "account-a1", 6, newer)
        await snapshots.save(session, "account-a1", 3, older)
    async with db.session() as session:
        kept = await snapshots.load(session, "account-a1", Account)
    assert kept is not None and (kept.position, kept.state.balance) == (6, 6)


# --- the outbox ---------------------------------------------------------------------------------


async def test_events_and_their_outbox_rows_commit_or_roll_back_together(db: Database) -> None:
    events = store(topic="accounts")
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as session:
            await events.append(session, "account-1", [deposited("1", 1)], NO_STREAM)
            raise RuntimeError("boom")
    assert await _count(db, EVENTS) == 0 and await _count(db, OUTBOX) == 0
    appended = [deposited("1", 1), deposited("1", 2)]
    async with db.transaction() as session:
        await events.append(session, "account-1", appended, NO_STREAM)
    async with db.session() as session:
        rows = (await session.execute(select(OUTBOX.c.topic, OUTBOX.c.key, OUTBOX.c.event_id)
                                      .order_by(OUTBOX.c.id))).all()
    assert [tuple(r) for r in rows] == [("accounts", "account-1", str(e.event_id))
                                        for e in appended]
    async with db.transaction() as session:
        await store(topic=None).append(session, "account-2", [deposited("2", 1)], NO_STREAM)
    assert await _count(db, OUTBOX) == 2, "a store without an outbox wrote to it"


async def test_the_stored_event_and_its_outbox_row_carry_the_same_correlation(
        db: Database) -> None:
    """The request's correlation id is stamped once, before either copy is written."""
    events = store(topic="accounts")
    with correlation.bound("request-7", "command-3"):
        async with db.transaction() as session:
            await events.append(session, "account-1", [deposited("1", 1)], NO_STREAM)
    async with db.session() as session:
        (stored,) = await events.read(session, "account-1")
        payload = (await session.execute(select(OUTBOX.c.payload))).scalar_one()
    sent = events.serializer.deserialize(payload)
    assert (stored.event.correlation_id, stored.event.causation_id) == ("request-7", "command-3")
    assert sent == stored.event


@pytest.mark.kafka
async def test_appended_events_reach_kafka_in_stream_order(
        db: Database, kafka_config: KafkaConfig) -> None:
    topic = unique("accounts")
    await KafkaAdmin(kafka_config).create_topics([topic], partitions=3)
    events = store(topic=topic)
    accounts = AggregateRepository(events, Account)
    account = Account.open("a1", "ann")
    for amount in (1, 2, 3):
        account.deposit(amount)
    async with db.transaction() as session:
        await accounts.save(session, account)
        await events.append(session, "account-a2", [AccountClosed(
            aggregate_id="a2", data=OpenedData(owner="bo"))], NO_STREAM)
    producer = KafkaProducer(kafka_config)
    await producer.start()
    try:
        relay = OutboxRelay(db, producer, metadata, owner="es-test")
        while await relay.publish_batch():
            pass
    finally:
        await producer.stop()
    records = await read_topic(kafka_config, topic)
    serializer = EventSerializer(registry())
    by_stream: dict[bytes, list[Any]] = {}
    for record in records:
        by_stream.setdefault(record.key or b"", []).append(
            serializer.deserialize(record.value, record.headers))
    assert [e.data for e in by_stream[b"account-a1"]] == [
        OpenedData(owner="ann"), *(AmountData(amount=a) for a in (1, 2, 3))]
    assert [e.EVENT_TYPE for e in by_stream[b"account-a2"]] == ["account.closed"]
    async with db.session() as session:
        stored = [r.event for r in await events.read(session, "account-a1")]
    assert by_stream[b"account-a1"] == stored  # the very events the store holds


# --- migrations ---------------------------------------------------------------------------------


async def test_a_service_migrates_the_tables_and_appends_through_them(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a service does: declare the tables in its models, autogenerate its migration,
    migrate; the migrated schema is the declared one, primary key included."""
    service = tmp_path / unique("ledger").replace("-", "_")
    service.mkdir()
    (service / "__init__.py").write_text("")
    (service / "models.py").write_text(MODELS)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    init_migrations(service)
    revision = await migrations.make_migration(service, "event store")
    assert revision is not None and '"stored_events"' in revision.read_text()
    await migrations.upgrade(service, db_url)
    await migrations.check(service, db_url)  # models and migrated schema agree
    db = Database(db_url)
    try:
        events = store()
        async with db.transaction() as session:
            await events.append(session, "account-1", [deposited("1", 1)], NO_STREAM)
        async with db.transaction() as session:
            with pytest.raises(StreamConflictError):
                await events.append(session, "account-1", [deposited("1", 2)], NO_STREAM)
        assert await _amounts(db, events, "account-1") == [1]
    finally:
        await db.dispose()
