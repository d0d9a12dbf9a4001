"""Projections on real Kafka, SQLite and PostgreSQL: events are projected once each across
restarts and a crash between apply and commit; a rebuild (a real `python -m core projections
rebuild` process, beside the live runner) arrives at the live rows; unknown types are skipped;
poison is dead-lettered live and stops a rebuild."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy import inspect as sa_inspect

from core.app import create_service
from core.config import KafkaConfig, Settings
from core.db import migrations
from core.db.engine import Database
from core.db.models import service_metadata
from core.db.scaffold import init_migrations
from core.health_check import DegradedError
from core.messaging import messaging_tables
from core.messaging.dlq import H_ATTEMPTS, H_GROUP, KafkaDeadLetterSink, dlq_topic
from core.messaging.kafka_client import KafkaProducer, read_topic
from core.projections import (
    Projection,
    ProjectionRunner,
    ProjectionSetupError,
    RebuildFailedError,
    View,
    rebuild,
)
from core.resilience.retry import RetryPolicy
from tests.helpers import eventually, unique
from tests.helpers.projections import (
    REFUSED,
    RideCompleted,
    completed,
    contents,
    create_tables,
    driver_trips,
    metadata,
    positions,
    publish,
    rated,
    requested,
    ride_history,
    ride_projections,
    rides,
)
from tests.integration.databases import DatabaseFactory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def db(databases: DatabaseFactory) -> AsyncIterator[Database]:
    database = Database(await databases.new())
    await create_tables(database.engine)
    yield database
    await database.dispose()


@pytest.fixture
async def producer(kafka_config: KafkaConfig) -> AsyncIterator[KafkaProducer]:
    started = KafkaProducer(dataclasses.replace(kafka_config, client_id=unique("producer")))
    await started.start()
    yield started
    await started.stop()


def expected(events: list[Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The history and trips rows `events` (rides from `rides`) project to, each once."""
    history: dict[str, list[Any]] = {}
    trips: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for event in events:
        d = event.data
        if event.EVENT_TYPE == "ride.requested":
            history[d.ride_id] = [d.ride_id, d.passenger_id, "requested", None, 1]
        elif event.EVENT_TYPE == "ride.completed":
            row = history[d.ride_id]
            row[2:] = ["completed", d.driver_id, row[4] + 1]
            trips[d.driver_id][0] += 1
            trips[d.driver_id][1] += d.fare_cents
    return ([tuple(r) for _, r in sorted(history.items())],
            [(k, *v) for k, v in sorted(trips.items())])


async def state(db: Database) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    return await contents(db.engine, ride_history), await contents(db.engine, driver_trips)


def runners(projections: tuple[Projection, ...], db: Database, kafka: KafkaConfig,
            producer: KafkaProducer, **options: Any) -> list[ProjectionRunner]:
    return [ProjectionRunner(p, db, kafka, dead_letters=KafkaDeadLetterSink(producer),
                             **options) for p in projections]


async def stored(db: Database) -> dict[tuple[str, str, int], int]:
    async with db.session() as session:
        rows = await session.execute(select(positions.c.projection, positions.c.topic,
                                            positions.c.partition, positions.c.next_offset))
        return {(name, topic, part): offset for name, topic, part, offset in rows}


async def ends(kafka: KafkaConfig, topic: str) -> dict[int, int]:
    last: dict[int, int] = {}
    for record in await read_topic(kafka, topic):
        last[record.partition] = max(last.get(record.partition, 0), record.offset + 1)
    return last


async def test_events_are_projected_once_and_a_restart_reads_on_from_the_stored_positions(
    db: Database, kafka_config: KafkaConfig, topic: str, producer: KafkaProducer
) -> None:
    first, second = rides("a", 20), rides("b", 20)
    await publish(producer, topic, first)
    live = runners(ride_projections(topic), db, kafka_config, producer)
    for runner in live:
        await runner.start()
    want = expected(first)
    await eventually(lambda: _equals(db, want), what="the first rides projected")
    for runner in live:
        await runner.stop()

    await publish(producer, topic, second)
    again = runners(ride_projections(topic), db, kafka_config, producer)
    for runner in again:
        await runner.start()
    try:
        await eventually(lambda: _equals(db, expected(first + second)),
                         what="the second rides projected after the restart")
        history, trips = again
        assert (history.applied, trips.applied) == (40, 20)  # only the new records
        at = await stored(db)
        for partition, end in (await ends(kafka_config, topic)).items():
            assert at[("ride_history", topic, partition)] == end
            assert at[("driver_trips", topic, partition)] == end
    finally:
        for runner in again:
            await runner.stop()


async def _equals(db: Database, want: tuple[list[Any], list[Any]]) -> bool:
    return await state(db) == want


async def test_a_crash_between_apply_and_commit_applies_nothing_twice_and_misses_nothing(
    db: Database, kafka_config: KafkaConfig, topic: str, producer: KafkaProducer, spawn: Any
) -> None:
    events = rides("c", 30)
    await publish(producer, topic, events)
    crash_at = "c-17"
    proc = spawn("tests.integration.procs.ride_projector", str(db.url.render_as_string(False)),
                 kafka_config.bootstrap_servers, topic, crash_at)
    out, _ = await asyncio.to_thread(proc.communicate, timeout=120)
    assert "started" in out and proc.returncode == -9  # killed before the commit

    _, trips = await state(db)
    assert sum(t[1] for t in trips) < 30, "the crash came before the trips were all applied"
    restarted = runners(ride_projections(topic), db, kafka_config, producer)
    for runner in restarted:
        await runner.start()
    try:
        await eventually(lambda: _equals(db, expected(events)),
                         what="every ride projected exactly once after the crash")
    finally:
        for runner in restarted:
            await runner.stop()


async def test_a_rebuild_from_scratch_equals_the_live_projection_and_the_live_one_reads_on(
    db: Database, kafka_config: KafkaConfig, topic: str, producer: KafkaProducer
) -> None:
    before, during = rides("r", 25, drivers=4), rides("s", 25, drivers=4)
    await publish(producer, topic, before)
    live = runners(ride_projections(topic), db, kafka_config, producer, batch=7)
    for runner in live:
        await runner.start()
    try:
        await eventually(lambda: _equals(db, expected(before)), what="the live projection")
        rows, at = await state(db), await stored(db)

        # Rebuilt (one in its own process, through the command) beside the live runners, no
        # new events: the swapped-in rows and positions are the live ones.
        done = await _cli(db, kafka_config, topic, "rebuild", "tests.sample_service",
                          "ride_history")
        assert "rebuilt ride_history: 50 event(s) applied" in done
        trips = await rebuild(ride_projections(topic)[1], db, kafka_config)
        assert trips.applied == 25 and trips.skipped == 25
        assert await state(db) == rows
        assert await stored(db) == at
        listed = json.loads(await _cli(db, kafka_config, topic, "list", "tests.sample_service",
                                       "--json"))
        assert {(r["projection"], r["partition"], r["next_offset"], r["lag"]) for r in listed} \
            == {(name, p, o, 0) for (name, _, p), o in at.items()}
        assert not [t for t in await _tables(db) if t.endswith("__rebuild")]

        # Rebuilt while events arrive: the live runners read on from the swapped positions,
        # nothing applied twice, nothing missed.
        publishing = asyncio.create_task(publish(producer, topic, during))
        rebuilt = await asyncio.gather(*(rebuild(p, db, kafka_config, batch=5)
                                         for p in ride_projections(topic)))
        await publishing
        assert all(r.applied >= 25 for r in rebuilt)
        await eventually(lambda: _equals(db, expected(before + during)),
                         what="the live projection after the swap")
        assert [r.dead_lettered for r in live] == [0, 0]  # the rebuild refused none of theirs
    finally:
        for runner in live:
            await runner.stop()


async def _cli(db: Database, kafka: KafkaConfig, topic: str, *args: str) -> str:
    """`python -m core projections ARGS` in its own process, on the ride projections."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           "RIDES_TOPIC": topic, "PYTHONPATH": str(ROOT)}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "core", "projections", *args,
         "--projections", "tests.integration.procs.ride_projections",
         "--url", db.url.render_as_string(False)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout if "--json" in args else " ".join(done.stdout.split())


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        names = await conn.run_sync(lambda c: sa_inspect(c).get_table_names())
    return set(names)


async def test_unknown_types_are_skipped_poison_is_dead_lettered_and_stops_a_rebuild(
    db: Database, kafka_config: KafkaConfig, topic: str, producer: KafkaProducer
) -> None:
    await publish(producer, topic, [requested("u-1", "p-1"), rated("u-1")])
    await producer.produce(topic, b"{not json", b"u-2", [("event_type", b"ride.requested"),
                                                         ("event_version", b"1")])
    await publish(producer, topic, [requested("u-3", REFUSED), completed("u-1", "d-1", 700)])
    fast = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.01)
    history, trips = runners(ride_projections(topic), db, kafka_config, producer, retry=fast)
    for runner in (history, trips):
        await runner.start()
    try:
        want = ([("u-1", "p-1", "completed", "d-1", 2)], [("d-1", 1, 700)])
        await eventually(lambda: _equals(db, want), what="the good events projected")
        await eventually(lambda: history.skipped == 3, what="rated, poison, refused skipped")
        assert history.applied == 2 and history.dead_lettered == 2
        # Records of types it does not apply are skipped undecoded: not its poison.
        await eventually(lambda: trips.skipped == 4, what="trips skipped the rest")
        assert trips.applied == 1 and trips.dead_lettered == 0
        assert sum((await history.lag()).values()) == 0

        letters = await eventually(lambda: _letters(kafka_config, topic, 2))
        assert sorted((r.key, r.header(H_ATTEMPTS), r.header(H_GROUP)) for r in letters) == [
            (b"u-2", "1", "projection:ride_history"), (b"u-3", "2", "projection:ride_history")]

        # The refused event is still unappliable: the rebuild stops and swaps nothing.
        rows, at = await state(db), await stored(db)
        fresh, _ = ride_projections(topic)
        with pytest.raises(RebuildFailedError, match="refused passenger"):
            await rebuild(fresh, db, kafka_config)
        assert await state(db) == rows and await stored(db) == at
        assert "ride_history__rebuild" not in await _tables(db)

        # An apply function that names the live table instead of view.table(...) would write
        # into the live rows while rebuilding: refused, nothing swapped.
        sloppy = Projection("sloppy", topics=[topic], tables=[ride_history])

        @sloppy.applies(RideCompleted)
        async def into_live(event: RideCompleted, view: View) -> None:
            await view.session.execute(delete(ride_history))

        with pytest.raises(RebuildFailedError, match=r"write through view\.table"):
            await rebuild(sloppy, db, kafka_config)
        assert await state(db) == rows
    finally:
        for runner in (history, trips):
            await runner.stop()


async def _letters(kafka: KafkaConfig, topic: str, count: int) -> list[Any] | None:
    records = await read_topic(kafka, dlq_topic(topic))
    return records if len(records) >= count else None


async def test_create_service_runs_its_projections_with_a_health_check(
    tmp_path: Path, kafka_config: KafkaConfig, producer: KafkaProducer
) -> None:
    """Declared with `create_service(projections=...)`: migrated with the service's tables,
    started with it (the topic made first), reported in `/health/ready`, stopped with it."""
    package = tmp_path / unique("rides").replace("-", "_")
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text("from tests.helpers.projections import metadata\n")
    init_migrations(package, f"{package.name}.models:metadata")
    assert await migrations.make_migration(package, "rides") is not None
    topic = unique("rides")
    settings = Settings(environment="development", service_name="rides",
                        database_url=f"sqlite+aiosqlite:///{tmp_path / 'rides.db'}",
                        kafka_bootstrap_servers=kafka_config.bootstrap_servers)
    app = create_service("rides", metadata=metadata, service_dir=package, settings=settings,
                         projections=ride_projections(topic))
    events = rides("h", 10)
    async with app.router.lifespan_context(app):
        await publish(producer, topic, events)  # the topic exists: made at start-up
        db = app.state.runtime.database
        await eventually(lambda: _equals(db, expected(events)), what="projected in a service")

        async def reported() -> dict[str, Any] | None:
            checks = {c.name: c for c in (await app.state.health.run()).checks}
            found = {n: (c.status, c.detail) for n, c in checks.items()
                     if n.startswith("projection:")}
            return found if all(v == ("ok", "lag 0") for v in found.values()) else None

        assert set(await eventually(reported, what="healthy projections")) == {
            "projection:ride_history", "projection:driver_trips"}


def test_create_service_refuses_projections_without_their_tables(tmp_path: Path) -> None:
    bare = service_metadata()
    messaging_tables(bare, inbox=False)
    with pytest.raises(ProjectionSetupError, match="positions_table"):
        create_service("rides", metadata=bare, service_dir=tmp_path,
                       projections=ride_projections("rides"))


async def test_the_health_check_reports_a_stalled_projection_and_its_recovery(
    db: Database, kafka_config: KafkaConfig, topic: str, producer: KafkaProducer
) -> None:
    released = asyncio.Event()
    stuck = Projection("stuck", topics=[topic], tables=[driver_trips])

    @stuck.applies(RideCompleted)
    async def wait(event: RideCompleted, view: View) -> None:
        await released.wait()

    await publish(producer, topic, rides("h", 3))
    runner = ProjectionRunner(stuck, db, kafka_config, dead_letters=None, stalled_after=0.3)
    await runner.start()
    try:
        async def stalled() -> str | None:
            try:
                await runner.check()
            except DegradedError as exc:
                return str(exc)
            return None

        assert "stuck stalled: 6 records waiting" in await eventually(stalled)
        released.set()
        await eventually(lambda: _lag_zero(runner), what="lag 0 once it moves again")
    finally:
        await runner.stop()


async def _lag_zero(runner: ProjectionRunner) -> bool:
    return await runner.check() == "lag 0"
