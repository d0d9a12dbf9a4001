"""The event store's rules on a SQLite file, fast enough for the unit suite (and so for
`make mutate`): which appends are refused and what they leave, reading windows, upcasting,
the snapshot rules and the repository's snapshot policy. The same on PostgreSQL, under real
races, through the outbox to Kafka: tests/integration/test_event_store.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, update

from core.db import Database
from core.db.models import service_metadata
from core.event_sourcing import (
    NO_STREAM,
    AggregateNotFoundError,
    AggregateRepository,
    DuplicateEventError,
    EventStore,
    StreamConflictError,
    UnreadableEventError,
    event_store_tables,
)
from core.messaging import EventRegistry, EventSerializer
from tests.event_sourced import (
    Account,
    create_schema,
    deposited,
    metadata,
    registry,
    store,
)
from tests.helpers import OrderPlacedV1, OrderPlacedV1Data, order_registry
from tests.unit.postgres_statements import PostgresStatements, SentError, on_postgresql

EVENTS, OUTBOX, SNAPSHOTS = (metadata.tables[name] for name in
                             ("stored_events", "outbox", "snapshots"))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """SQLite returns rows in key order even without ORDER BY, which would hide a read that
    forgot it: here unordered SELECTs come back reversed."""
    database = await create_schema(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    sa_event.listen(database.engine.sync_engine, "connect", _unordered_selects_reversed)
    await database.engine.dispose()  # connections opened from now on have it
    yield database
    await database.dispose()


def _unordered_selects_reversed(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA reverse_unordered_selects = ON")
    cursor.close()


async def _rows(db: Database, table: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def _positions(db: Database, events: EventStore, stream_id: str, **window: Any) -> list[
        int]:
    async with db.session() as session:
        return [r.position for r in await events.read(session, stream_id, **window)]


async def _append(db: Database, events: EventStore, stream_id: str, amounts: list[int],
                  expected: int) -> int:
    async with db.transaction() as session:
        return await events.append(session, stream_id,
                                   [deposited(stream_id, a) for a in amounts], expected)


async def test_positions_continue_from_the_expected_version(db: Database) -> None:
    events = store(topic=None)
    before = datetime.now(UTC)
    assert await _append(db, events, "s", [1], NO_STREAM) == 1
    assert await _append(db, events, "s", [2, 3, 4], 1) == 4
    assert await _positions(db, events, "s") == [1, 2, 3, 4]
    async with db.session() as session:
        read = await events.read(session, "s")
    assert [r.event.data.amount for r in read] == [1, 2, 3, 4]
    assert all(before <= r.recorded_at <= datetime.now(UTC) for r in read)
    assert await _positions(db, events, "s", after=3) == [4]
    assert await _positions(db, events, "s", after=4) == []
    assert await _positions(db, events, "s", after=1, limit=2) == [2, 3]
    async with db.session() as session:
        assert await events.version(session, "s") == 4
        assert await events.version(session, "t") == 0


@pytest.mark.parametrize(("expected", "amounts"), [
    (NO_STREAM, [9]), (NO_STREAM, [9, 9, 9]), (1, [9]), (1, [9, 9]), (3, [9]), (4, [9, 9])])
async def test_an_append_at_any_other_version_than_the_streams_writes_nothing(
        db: Database, expected: int, amounts: list[int]) -> None:
    events = store()
    await _append(db, events, "s", [1, 2], NO_STREAM)
    with pytest.raises(StreamConflictError) as caught:
        await _append(db, events, "s", amounts, expected)
    assert (caught.value.expected, caught.value.actual) == (expected, 2)
    assert str(caught.value) == f"stream 's': expected version {expected}, found 2"
    assert await _positions(db, events, "s") == [1, 2]
    assert await _rows(db, EVENTS) == 2 and await _rows(db, OUTBOX) == 2


async def test_a_stream_is_at_a_version_only_by_its_own_events(db: Database) -> None:
    events = store()
    await _append(db, events, "s", [1, 2], NO_STREAM)
    with pytest.raises(StreamConflictError) as caught:  # "t" has no event 1, "s" has
        await _append(db, events, "t", [9], 1)
    assert (caught.value.stream_id, caught.value.actual) == ("t", NO_STREAM)
    assert await _append(db, events, "t", [9], NO_STREAM) == 1


async def test_a_refused_append_leaves_the_rest_of_the_transaction_alone(db: Database) -> None:
    events = store()
    await _append(db, events, "s", [1], NO_STREAM)
    async with db.transaction() as session:
        await events.append(session, "other", [deposited("o", n) for n in (1, 2, 3)],
                            NO_STREAM)
        with pytest.raises(StreamConflictError):  # writes position 2, then takes it back
            await events.append(session, "s", [deposited("s", 2), deposited("s", 3)],
                                NO_STREAM)
    assert await _positions(db, events, "other") == [1, 2, 3]
    assert await _positions(db, events, "s") == [1]


async def test_an_event_id_is_stored_once_even_within_one_append(db: Database) -> None:
    events, event = store(), deposited("s", 1)
    with pytest.raises(DuplicateEventError, match="'s'"):
        async with db.transaction() as session:
            await events.append(session, "s", [event, event], NO_STREAM)
    assert await _rows(db, EVENTS) == 0


async def test_each_event_goes_to_the_outbox_keyed_by_its_stream(db: Database) -> None:
    events = store(topic="ledger.events")
    async with db.transaction() as session:  # the stream's id, not the aggregate's
        await events.append(session, "account-s", [deposited("s", 1), deposited("s", 2)],
                            NO_STREAM)
    async with db.session() as session:
        rows = (await session.execute(
            select(OUTBOX.c.topic, OUTBOX.c.key).order_by(OUTBOX.c.id))).all()
    assert [tuple(r) for r in rows] == [("ledger.events", "account-s")] * 2


async def test_old_versions_are_upcast_and_unknown_types_named(db: Database) -> None:
    old = EventRegistry()
    old.register(OrderPlacedV1)
    async with db.transaction() as session:
        await EventStore(metadata, EventSerializer(old)).append(session, "o", [
            OrderPlacedV1(aggregate_id="o", data=OrderPlacedV1Data(order_id="o", amount=2))],
            NO_STREAM)
    async with db.session() as session:
        (recorded,) = await EventStore(metadata, EventSerializer(order_registry())).read(
            session, "o")
        assert (recorded.stream_id, recorded.position) == ("o", 1)
        assert recorded.event.data.amount_cents == 200
        with pytest.raises(UnreadableEventError, match=r"stream 'o' position 1: .*order\.placed") \
                as caught:
            await store().read(session, "o")
        assert (caught.value.stream_id, caught.value.position) == ("o", 1)


# --- snapshots ----------------------------------------------------------------------------------


async def test_a_snapshot_loads_as_saved_unless_its_shape_changed(db: Database) -> None:
    snapshots = store().snapshots
    state = Account(id="a", owner="ann", balance=5, movements=[5], version=1)
    async with db.transaction() as session:
        assert await snapshots.load(session, "account-a", Account) is None
        await snapshots.save(session, "account-a", 1, state, schema_version=2)
    async with db.session() as session:
        kept = await snapshots.load(session, "account-a", Account, schema_version=2)
        assert kept is not None and kept.state == state
        assert (kept.stream_id, kept.position) == ("account-a", 1)
        assert kept.taken_at.tzinfo is not None
        assert await snapshots.load(session, "account-a", Account) is None  # schema v1 asked
        assert await snapshots.load(session, "account-a", Account, schema_version=3) is None
        await session.execute(update(SNAPSHOTS).values(state=b'{"id": "a", "balance": "x"}'))
        assert await snapshots.load(session, "account-a", Account, schema_version=2) is None


async def test_a_later_snapshot_replaces_an_earlier_one(db: Database) -> None:
    snapshots = store().snapshots
    async with db.transaction() as session:
        await snapshots.save(session, "account-a", 3, Account(id="a", balance=3))
        await snapshots.save(session, "account-a", 4, Account(id="a", balance=4))
        await snapshots.save(session, "account-a", 2, Account(id="a", balance=2))
    async with db.session() as session:
        kept = await snapshots.load(session, "account-a", Account)
    assert kept is not None and (kept.position, kept.state.balance) == (4, 4)


# --- the repository -----------------------------------------------------------------------------


async def _save(db: Database, accounts: AggregateRepository[Account], *amounts: int) -> int:
    async with db.transaction() as session:
        account = await accounts.find(session, "a") or Account.open("a", "ann")
        for amount in amounts:
            account.deposit(amount)
        return await accounts.save(session, account)


async def _snapshot_position(db: Database) -> int | None:
    async with db.session() as session:
        return await session.scalar(select(SNAPSHOTS.c.position))


@pytest.mark.parametrize(("every", "saves", "snapshot_at"), [
    (None, [[1], [2, 3]], None),
    (1, [[1]], 2),
    (3, [[1]], None),             # versions 1..2: below 3
    (3, [[1, 2]], 3),             # 1..3: reaches it
    (3, [[1, 2], [3]], 3),        # 3 then 4: the next is at 6
    (3, [[1, 2, 3, 4, 5, 6]], 7),  # past 3 and 6 in one save: the version saved
    (3, [[1], [2, 3, 4, 5]], 6),
])
async def test_a_save_snapshots_when_it_passes_a_multiple_of_snapshot_every(
        db: Database, every: int | None, saves: list[list[int]], snapshot_at: int | None,
) -> None:
    accounts = AggregateRepository(store(topic=None), Account, snapshot_every=every)
    for amounts in saves:
        await _save(db, accounts, *amounts)
    assert await _snapshot_position(db) == snapshot_at


async def test_loading_reads_the_snapshot_then_the_events_after_it(db: Database) -> None:
    events = store(topic=None)
    accounts = AggregateRepository(events, Account, snapshot_every=2)
    assert await _save(db, accounts, 10) == 2  # snapshot at 2
    assert await _save(db, accounts, 20) == 3
    async with db.transaction() as session:  # the snapshot, not the events, says "forged"
        await session.execute(update(SNAPSHOTS).values(
            state=Account(id="a", owner="forged", balance=10, movements=[10], version=2)
            .model_dump_json().encode()))
    async with db.session() as session:
        account = await accounts.load(session, "a")
        plain = await AggregateRepository(events, Account).load(session, "a")
    assert (account.owner, account.balance, account.movements, account.version) == (
        "forged", 30, [10, 20], 3)
    assert (plain.owner, plain.version) == ("ann", 3)  # no snapshot_every: never reads one


async def test_a_snapshot_of_another_aggregate_is_not_used(db: Database) -> None:
    events = store(topic=None)
    accounts = AggregateRepository(events, Account, snapshot_every=1)
    await _save(db, accounts, 10)
    async with db.transaction() as session:
        await session.execute(update(SNAPSHOTS).values(
            state=Account(id="b", owner="bo", balance=99, version=2).model_dump_json()
            .encode()))
    async with db.session() as session:
        account = await accounts.load(session, "a")
    assert (account.id, account.owner, account.balance, account.version) == ("a", "ann", 10, 2)


async def test_a_save_appends_at_the_loaded_version_and_clears_only_on_success(
        db: Database) -> None:
    accounts = AggregateRepository(store(topic=None), Account)
    await _save(db, accounts)
    async with db.session() as session:
        stale = await accounts.load(session, "a")
    assert await _save(db, accounts, 5) == 2
    stale.deposit(7)
    stale.deposit(8)
    async with db.transaction() as session:
        with pytest.raises(StreamConflictError) as caught:
            await accounts.save(session, stale)
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == (
        "account-a", 1, 2)
    assert len(stale.pending) == 2
    async with db.transaction() as session:
        fresh = await accounts.load(session, "a")
        fresh.deposit(7)
        fresh.deposit(8)
        assert await accounts.save(session, fresh) == 4
        assert fresh.pending == () and fresh.version == 4
        assert await accounts.save(session, fresh) == 4  # nothing pending: nothing appended
    assert await _rows(db, EVENTS) == 4


async def test_loading_a_stream_without_events_is_not_found(db: Database) -> None:
    accounts = AggregateRepository(store(topic=None), Account, snapshot_every=1)
    async with db.session() as session:
        assert await accounts.find(session, "nobody") is None
        with pytest.raises(AggregateNotFoundError, match="'account-nobody'") as caught:
            await accounts.load(session, "nobody")
    assert caught.value.stream_id == "account-nobody"


class AccountV2(Account):
    """The account after a change of its state's shape: the same stream, new snapshots."""

    CATEGORY: ClassVar[str] = "account"
    SNAPSHOT_VERSION: ClassVar[int] = 2


async def _forge_snapshot(db: Database, owner: str) -> None:
    async with db.transaction() as session:
        await session.execute(update(SNAPSHOTS).values(
            state=Account(id="a", owner=owner, balance=10, movements=[10], version=2)
            .model_dump_json().encode()))


async def test_snapshots_of_another_snapshot_version_are_not_read(db: Database) -> None:
    events = store(topic=None)
    await _save(db, AggregateRepository(events, Account, snapshot_every=2), 10)  # v1 at 2
    await _forge_snapshot(db, "forged v1")  # the snapshot, not the events, says so
    accounts = AggregateRepository(events, AccountV2, snapshot_every=2)
    async with db.session() as session:
        assert (await accounts.load(session, "a")).owner == "ann"  # replayed instead
    async with db.transaction() as session:
        account = await accounts.load(session, "a")
        account.deposit(1)
        account.deposit(2)
        await accounts.save(session, account)  # a v2 snapshot at 4
    await _forge_snapshot(db, "forged v2")
    async with db.session() as session:
        assert (await accounts.load(session, "a")).owner == "forged v2"


async def test_a_fresh_declaration_keeps_one_event_per_position_and_per_id(
        tmp_path: Path) -> None:
    """The tables as a service declares them (not this module's, declared at import)."""
    declared = service_metadata()
    event_store_tables(declared)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    async with db.engine.begin() as conn:
        await conn.run_sync(declared.create_all)
    events = EventStore(declared, EventSerializer(registry()))
    try:
        assert await _append(db, events, "s", [1, 2], NO_STREAM) == 2
        assert await _append(db, events, "t", [3], NO_STREAM) == 1  # position 1 again
        with pytest.raises(StreamConflictError):
            await _append(db, events, "t", [4], NO_STREAM)
        event = deposited("u", 5)
        async with db.transaction() as session:
            await events.append(session, "u", [event], NO_STREAM)
        with pytest.raises(DuplicateEventError):
            async with db.transaction() as session:
                await events.append(session, "v", [event], NO_STREAM)
        async with db.transaction() as session:
            await events.snapshots.save(session, "s", 1, Account(id="s", balance=1))
            await events.snapshots.save(session, "s", 2, Account(id="s", balance=3))
            await events.snapshots.save(session, "t", 1, Account(id="t", balance=3))
        async with db.session() as session:
            kept = await events.snapshots.load(session, "s", Account)
            assert kept is not None and (kept.position, kept.state.balance) == (2, 3)
            assert [r.position for r in await events.read(session, "s")] == [1, 2]
    finally:
        await db.dispose()


async def test_on_postgresql_an_append_and_a_snapshot_use_postgresql_upserts() -> None:
    """What the unit tests' SQLite cannot show: the statements compile for PostgreSQL (the
    same, run there: tests/integration/test_event_store.py)."""
    events, session = store(topic=None), PostgresStatements()
    for _ in range(2):  # built once per dialect, then reused
        with pytest.raises(SentError):
            await events.append(session, "s", [deposited("s", 1)], NO_STREAM)  # type: ignore[arg-type]
    append = on_postgresql(session.statements[0])
    assert session.statements[1] is session.statements[0]
    assert "ON CONFLICT (stream_id, position) DO NOTHING RETURNING" in append
    with pytest.raises(SentError):
        await events.snapshots.save(session, "s", 1, Account(id="s"))  # type: ignore[arg-type]
    save = on_postgresql(session.statements[2])
    assert "ON CONFLICT (stream_id) DO UPDATE SET position = excluded.position" in save
    assert save.endswith("WHERE snapshots.position < excluded.position")
