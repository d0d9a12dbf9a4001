"""How `ProjectionRunner` treats the records a poll hands it (`_handle`, the one place its
policy is decided), on a SQLite file: rows and positions in one transaction, skips, poison,
an apply that raises, a position moved under it, a rebuild's stricter rules, its health.
Reading the records from Kafka (`start`, `run`, `_read`, `lag`) needs a broker:
tests/integration/test_projections.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from core.config import KafkaConfig
from core.db import Database
from core.health_check import DegradedError
from core.messaging import EventSerializer
from core.messaging.dlq import InMemoryDeadLetterSink
from core.messaging.errors import PermanentHandlerError
from core.messaging.types import HEADER_EVENT_TYPE, Record
from core.projections import (
    PositionConflictError,
    Projection,
    ProjectionRunner,
    RebuildFailedError,
    positions_table,
)
from core.projections.positions import advance
from core.resilience.retry import RetryPolicy
from tests.helpers.projections import (
    REFUSED,
    completed,
    create_tables,
    driver_trips,
    metadata,
    producer_registry,
    rated,
    requested,
    ride_history,
    ride_projections,
)

TOPIC = "rides"
KAFKA = KafkaConfig(bootstrap_servers="127.0.0.1:1", client_id="unit", consumer_group="unit")
QUICK = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.001, jitter=False,
                    should_retry=lambda exc: not isinstance(exc, PermanentHandlerError))
_serializer = EventSerializer(producer_registry())


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'read.db'}")
    await create_tables(database.engine)
    yield database
    await database.dispose()


def records(*events: Any, partition: int = 0, first: int = 0) -> list[Record]:
    out = []
    for offset, event in enumerate(events, first):
        value, headers = _serializer.serialize(event)
        out.append(Record(TOPIC, partition, offset, event.aggregate_id.encode(), value, headers))
    return out


def runner(db: Database, projection: Projection, **options: Any) -> ProjectionRunner:
    options.setdefault("dead_letters", InMemoryDeadLetterSink())
    options.setdefault("retry", QUICK)
    return ProjectionRunner(projection, db, KAFKA, **options)


async def rows(db: Database, table: Any) -> list[tuple[Any, ...]]:
    async with db.session() as session:
        result = await session.execute(select(table).order_by(*table.primary_key.columns))
        return [tuple(row) for row in result]


async def stored(db: Database, key: str) -> dict[tuple[str, int], int]:
    table = positions_table(metadata)
    async with db.session() as session:
        result = await session.execute(select(table.c.topic, table.c.partition,
                                              table.c.next_offset)
                                       .where(table.c.projection == key))
        return {(t, p): o for t, p, o in result}


async def test_a_batch_applies_its_events_and_moves_each_partitions_position(
        db: Database) -> None:
    history, _ = ride_projections(TOPIC)
    live = runner(db, history)
    assert live.waiting is None and live.failure is None
    await live._reload(None)
    batch = (records(requested("r1", "ann"), rated("r1"), completed("r1", "d1"))
             + records(requested("r2", "bo"), partition=1, first=4))
    await live._handle(TOPIC, batch)
    assert await rows(db, ride_history) == [("r1", "ann", "completed", "d1", 2),
                                            ("r2", "bo", "requested", None, 1)]
    assert await stored(db, "ride_history") == {(TOPIC, 0): 3, (TOPIC, 1): 5}
    assert live.positions == {(TOPIC, 0): 3, (TOPIC, 1): 5}
    assert (live.applied, live.skipped, live.dead_lettered) == (3, 1, 0)
    assert live.waiting is None


async def test_records_below_the_stored_position_are_not_applied_again(db: Database) -> None:
    history, _ = ride_projections(TOPIC)
    batch = records(requested("r1", "ann"), completed("r1", "d1"))
    await runner(db, history)._handle(TOPIC, batch[:1])
    again = runner(db, history)  # a restart: it reads the stored positions
    await again._reload(None)
    assert again.positions == {(TOPIC, 0): 1}
    await again._handle(TOPIC, batch)  # the first is redelivered
    assert await rows(db, ride_history) == [("r1", "ann", "completed", "d1", 2)]
    assert (again.applied, again.skipped) == (1, 0)
    await again._handle(TOPIC, batch[1:])
    assert (again.applied, again.skipped) == (1, 0)


async def test_records_of_a_type_not_applied_here_are_skipped(db: Database) -> None:
    trips = Projection("trips", topics=[TOPIC], tables=[driver_trips],
                       events=producer_registry())  # knows every ride event
    trips.add(type(completed("r", "d")), _noop)
    unknown = records(completed("r1", "d1"))[0]
    headers = [(n, b"ride.unheard" if n == HEADER_EVENT_TYPE else v) for n, v in unknown.headers]
    rated_headers = [(n, b"ride.rated" if n == HEADER_EVENT_TYPE else v)
                     for n, v in unknown.headers]
    sink = InMemoryDeadLetterSink()
    live = runner(db, trips, dead_letters=sink)
    await live._handle(TOPIC, [Record(TOPIC, 0, 0, None, b"{not json", rated_headers)])  # unread
    no_headers = Record(TOPIC, 0, 1, None, records(rated("r1"))[0].value, [])
    await live._handle(TOPIC, [no_headers])  # typed by its body: known, not applied here
    unheard = Record(TOPIC, 0, 2, None, unknown.value.replace(b"ride.completed",
                                                               b"ride.unheard"), [])
    await live._handle(TOPIC, [unheard])  # typed by its body: unknown here
    await live._handle(TOPIC, [Record(TOPIC, 0, 3, None, unknown.value, headers)])
    assert (live.applied, live.skipped, live.dead_lettered, sink.records) == (0, 4, 0, [])
    assert await stored(db, "trips") == {(TOPIC, 0): 4}


async def _noop(event: Any, view: Any) -> None: ...


async def test_reloading_one_topic_leaves_the_others_as_they_are(db: Database) -> None:
    history = Projection("two", topics=["a", "b"], tables=[ride_history])
    live = runner(db, history)
    for where, to in ((("a", 0), 4), (("b", 0), 7)):
        async with db.transaction() as session:
            await advance(session, positions_table(metadata), "two", where, None, to)
    live.positions = {("a", 0): 1, ("a", 1): 2, ("b", 0): 3}
    await live._reload("a")
    assert live.positions == {("a", 0): 4, ("b", 0): 3}
    await live._reload(None)
    assert live.positions == {("a", 0): 4, ("b", 0): 7}


async def test_poison_is_dead_lettered_once_and_skipped(db: Database) -> None:
    history, _ = ride_projections(TOPIC)
    sink = InMemoryDeadLetterSink()
    live = runner(db, history, dead_letters=sink)
    good = records(requested("r1", "ann"))[0]
    poison = Record(TOPIC, 0, 1, b"r1", b"{not json", good.headers)
    await live._handle(TOPIC, [good])
    await live._handle(TOPIC, [poison])  # the next one: at the stored position
    await live._handle(TOPIC, [poison])  # redelivered: already dealt with
    ((record, headers),) = sink.records
    told = dict(headers)
    assert (record.offset, told["dlq.consumer_group"], told["dlq.attempts"]) == (
        1, b"projection:ride_history", b"1")
    assert b"Invalid JSON" in told["dlq.error"]
    assert (live.applied, live.skipped, live.dead_lettered) == (1, 1, 1)
    assert await stored(db, "ride_history") == {(TOPIC, 0): 2}


async def test_an_apply_that_keeps_failing_is_retried_then_dead_lettered(db: Database) -> None:
    history, _ = ride_projections(TOPIC)
    sink = InMemoryDeadLetterSink()
    live = runner(db, history, dead_letters=sink)
    batch = records(requested("r1", "ann"), requested("r2", REFUSED), requested("r3", "cy"),
                    requested("r4", REFUSED))
    await live._handle(TOPIC, batch)  # the batch fails; one by one, r2 fails each attempt
    assert [row[0] for row in await rows(db, ride_history)] == ["r1", "r3"]
    assert [(r.offset, dict(h)["dlq.attempts"], dict(h)["dlq.error"])
            for r, h in sink.records] == [(1, b"3", b"refused passenger"),
                                          (3, b"3", b"refused passenger")]
    assert (live.applied, live.skipped, live.dead_lettered) == (2, 2, 2)
    assert await stored(db, "ride_history") == {(TOPIC, 0): 4}


async def test_each_attempt_applies_the_record_it_was_handed(db: Database) -> None:
    seen: list[int] = []

    async def flaky(event: Any, view: Any) -> None:
        seen.append(view.record.offset)
        if len(seen) < 3:
            raise ValueError("not yet")

    projection = Projection("flaky", topics=[TOPIC], tables=[ride_history])
    projection.add(type(requested("r", "p")), flaky)
    live = runner(db, projection)
    await live._handle(TOPIC, records(requested("r", "p"), first=5))
    assert seen == [5, 5, 5] and live.waiting is None  # the third attempt of three
    assert (live.applied, live.dead_lettered) == (1, 0)


async def test_without_a_sink_a_failing_event_is_skipped_all_the_same(db: Database) -> None:
    history, _ = ride_projections(TOPIC)
    live = runner(db, history, dead_letters=None)
    await live._handle(TOPIC, records(requested("r1", REFUSED)))
    assert (live.applied, live.skipped, live.dead_lettered) == (0, 1, 1)
    assert await stored(db, "ride_history") == {(TOPIC, 0): 1}


async def test_a_permanent_failure_is_not_retried(db: Database) -> None:
    calls = []

    async def refuse(event: Any, view: Any) -> None:
        calls.append(event)
        raise PermanentHandlerError("never")

    projection = Projection("refusing", topics=[TOPIC], tables=[ride_history])
    projection.add(type(requested("r", "p")), refuse)
    sink = InMemoryDeadLetterSink()
    await runner(db, projection, dead_letters=sink)._handle(TOPIC, records(requested("r", "p")))
    assert len(calls) == 1 and dict(sink.records[0][1])["dlq.attempts"] == b"1"


async def test_a_position_moved_under_the_runner_applies_nothing(db: Database) -> None:
    _, trips = ride_projections(TOPIC)
    live = runner(db, trips)
    await live._handle(TOPIC, records(completed("r1", "d1")))
    async with db.transaction() as session:  # another instance applied the next one
        await advance(session, positions_table(metadata), "driver_trips", (TOPIC, 0), 1, 2)
    for batch in (records(completed("r2", "d1"), first=1),
                  records(completed("r2", "d1"), completed("r3", "d1"), first=1)):
        with pytest.raises(PositionConflictError):
            await live._handle(TOPIC, batch)
    assert await rows(db, driver_trips) == [("d1", 1, 1000)]
    assert live.positions == {(TOPIC, 0): 1}


async def test_rebuilding_stops_at_an_event_it_cannot_apply_and_dead_letters_nothing(
        db: Database) -> None:
    history, _ = ride_projections(TOPIC)
    sink = InMemoryDeadLetterSink()
    rebuild = runner(db, history, dead_letters=sink, rebuilding=True, key="ride_history#rb")
    poison = Record(TOPIC, 0, 0, b"r1", b"{not json", records(requested("r", "p"))[0].headers)
    await rebuild._handle(TOPIC, [poison])
    with pytest.raises(RebuildFailedError, match=r"ride_history cannot apply rides/0@1"):
        await rebuild._handle(TOPIC, records(requested("r2", REFUSED), first=1))
    assert sink.records == [] and rebuild.dead_lettered == 0
    assert await stored(db, "ride_history#rb") == {(TOPIC, 0): 1}
    assert await stored(db, "ride_history") == {}


async def test_the_health_check_says_what_stopped_it_or_why_it_waits(db: Database) -> None:
    history, _ = ride_projections(TOPIC)
    live = runner(db, history)
    live.waiting = "database unavailable: gone"
    with pytest.raises(DegradedError, match=r"^projection ride_history: database unavailable"):
        await live.check()
    live.failure = RuntimeError("broken")
    with pytest.raises(RuntimeError, match="broken"):
        await live.check()
    await live.stop()  # nothing started: nothing to stop


async def test_while_the_database_is_away_an_apply_waits_without_spending_attempts(
        db: Database) -> None:
    calls: list[int] = []

    async def locked(event: Any, view: Any) -> None:
        calls.append(view.record.offset)
        if len(calls) <= 3:  # as many as QUICK's attempts: spent, they would dead-letter
            raise OperationalError("INSERT", {}, Exception("database is locked"))

    projection = Projection("locked", topics=[TOPIC], tables=[ride_history])
    projection.add(type(requested("r", "p")), locked)
    live = runner(db, projection)
    await live._apply_one(TOPIC, (await live._decode(records(requested("r", "p"))[0])))
    assert len(calls) == 4 and (live.applied, live.dead_lettered) == (1, 0)
    assert live.waiting is None


def test_by_default_an_apply_is_retried_unless_it_fails_for_good() -> None:
    from core.projections.runner import RETRY
    assert RETRY.should_retry(ValueError("transient"))
    assert not RETRY.should_retry(PermanentHandlerError("never"))
    assert not RETRY.should_retry(RebuildFailedError("setup"))
