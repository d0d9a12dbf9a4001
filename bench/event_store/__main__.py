"""`python -m bench.event_store` (part of `make bench`): event-store appends per second on
PostgreSQL against raw asyncpg inserting the same rows, measured in one run on one server.

Each append is one transaction holding one event, written by `--writers` tasks (one
connection each), each appending to its own `--streams` streams in turn at the version it
last saw, as a service appending commands' events does (loading the aggregate is not
measured). Two pairs:

- `EventStore`: `db.transaction()` and `EventStore.append` (one INSERT .. ON CONFLICT DO
  NOTHING RETURNING, with the gap check) against raw asyncpg's plain INSERT of the same row;
- `EventStore + outbox`: the same, the store also adding the event to the outbox
  (`OutboxWriter`), against raw asyncpg inserting both rows.

A third line splits the gap to the floor: `SQLAlchemy insert` writes the same row with a
plain `insert(table)` in `db.transaction()`, no store (no conflict handling, no gap check):
what the database layer costs before the store adds anything.

Medians of `--rounds` interleaved rounds (the order rotates each round), with the ratio to
the floor. The floor is in `bench.event_store.floor`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from sqlalchemy import MetaData, insert, text

from bench.event_store.floor import asyncpg_appends
from core.db import Database
from core.event_sourcing import EventStore, event_store_tables
from core.messaging import (
    DomainEvent,
    EventRegistry,
    EventSerializer,
    OutboxWriter,
    messaging_tables,
)

console = Console(width=120)
TOPIC = "bench-event-store"

metadata = MetaData()
event_store_tables(metadata)
messaging_tables(metadata, inbox=False)


class Moved(BaseModel):
    seq: int
    lat: float
    lon: float
    note: str


class BenchMoved(DomainEvent[Moved]):
    EVENT_TYPE = "bench.moved"


def _event(stream: str, seq: int) -> BenchMoved:
    return BenchMoved(aggregate_id=stream, data=Moved(seq=seq, lat=52.52, lon=13.405,
                                                      note="x" * 120))


def _streams(writers: int, per_writer: int) -> list[list[str]]:
    """Fresh stream ids for one run of one path: no path ever appends to another's."""
    run = uuid.uuid4().hex[:8]
    return [[f"bench-{run}-{w}-{s}" for s in range(per_writer)] for w in range(writers)]


async def store_appends(db: Database, store: EventStore, streams: list[list[str]],
                        per_writer: int) -> float:
    """Appends per second through the framework: `db.transaction()` and `EventStore`."""

    async def writer(mine: list[str]) -> None:
        versions = dict.fromkeys(mine, 0)
        for i in range(per_writer):
            stream = mine[i % len(mine)]
            async with db.transaction() as session:
                versions[stream] = await store.append(session, stream, [_event(stream, i)],
                                                      versions[stream])

    started = time.perf_counter()
    await asyncio.gather(*(writer(mine) for mine in streams))
    return per_writer * len(streams) / (time.perf_counter() - started)


async def sqlalchemy_appends(db: Database, streams: list[list[str]], per_writer: int) -> float:
    """The same row per transaction with a plain SQLAlchemy insert: the database layer's
    own cost, no store."""
    table = metadata.tables["stored_events"]
    statement = insert(table)

    async def writer(mine: list[str]) -> None:
        versions = dict.fromkeys(mine, 0)
        for i in range(per_writer):
            stream = mine[i % len(mine)]
            event = _event(stream, i)
            async with db.transaction() as session:
                await session.execute(statement, {
                    "stream_id": stream, "position": versions[stream] + 1,
                    "event_id": str(event.event_id), "event_type": event.EVENT_TYPE,
                    "event_version": event.EVENT_VERSION,
                    "payload": event.__pydantic_serializer__.to_json(event),
                    "recorded_at": event.timestamp})
            versions[stream] += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(mine) for mine in streams))
    return per_writer * len(streams) / (time.perf_counter() - started)


PATHS = ("EventStore", "SQLAlchemy insert", "raw asyncpg", "EventStore + outbox",
         "raw asyncpg + outbox")
FLOOR = {"EventStore": "raw asyncpg", "SQLAlchemy insert": "raw asyncpg",
         "EventStore + outbox": "raw asyncpg + outbox"}


async def rounds(url: str, dsn: str, args: argparse.Namespace) -> dict[str, list[float]]:
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    events = EventRegistry()
    events.register(BenchMoved)
    serializer = EventSerializer(events, service_name="bench")
    bare = EventStore(metadata, serializer)
    with_outbox = EventStore(metadata, serializer, outbox=OutboxWriter(metadata, serializer),
                             topic=TOPIC)
    per_writer = args.appends // args.writers

    def streams() -> list[list[str]]:
        return _streams(args.writers, args.streams)

    paths: dict[str, Callable[[int], Awaitable[float]]] = {
        "EventStore": lambda n: store_appends(db, bare, streams(), n),
        "SQLAlchemy insert": lambda n: sqlalchemy_appends(db, streams(), n),
        "raw asyncpg": lambda n: asyncpg_appends(dsn, _event, streams(), n, outbox_topic=None),
        "EventStore + outbox": lambda n: store_appends(db, with_outbox, streams(), n),
        "raw asyncpg + outbox": lambda n: asyncpg_appends(dsn, _event, streams(), n,
                                                          outbox_topic=TOPIC),
    }
    samples: dict[str, list[float]] = {name: [] for name in PATHS}
    try:
        for path in paths.values():  # warm-up: pools, statement caches, table growth
            await path(max(1, per_writer // 10))
        for r in range(args.rounds):
            order = PATHS[r % len(PATHS):] + PATHS[:r % len(PATHS)]
            for name in order:
                with console.status(f"round {r + 1}/{args.rounds}: {name}, "
                                    f"{per_writer * args.writers:,} appends..."):
                    samples[name].append(await paths[name](per_writer))
        async with db.session() as session:  # every path wrote what it claims
            stored = await session.scalar(text("SELECT count(*) FROM stored_events"))
        console.print(f"{stored:,} events stored in all")
    finally:
        await db.dispose()
    return samples


def report(samples: dict[str, list[float]], args: argparse.Namespace) -> dict[str, Any]:
    medians = {name: statistics.median(values) for name, values in samples.items()}
    table = Table(title=f"Event-store appends on PostgreSQL: one event per transaction, "
                        f"{args.writers} writers x {args.streams} streams, "
                        f"median of {args.rounds} interleaved rounds")
    for column in ("path", "appends/s ↑", "min", "max", "vs floor"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, values in samples.items():
        floor = FLOOR.get(name)
        ratio = f"{medians[name] / medians[floor]:.2f}x of {floor}" if floor else "floor"
        table.add_row(name, f"{medians[name]:,.0f}", f"{min(values):,.0f}",
                      f"{max(values):,.0f}", ratio)
    console.print(table)
    return {"medians": medians, "samples": samples,
            "ratios": {name: medians[name] / medians[floor] for name, floor in FLOOR.items()}}


async def run(args: argparse.Namespace) -> None:
    from devinfra.postgres import PostgresServer

    load_before = os.getloadavg()[0]
    with console.status("starting PostgreSQL"):
        pg = await asyncio.to_thread(PostgresServer.start)
    try:
        samples = await rounds(pg.url, pg.dsn, args)
        saved: dict[str, Any] = {"appends": args.appends, "writers": args.writers,
                                 "streams": args.streams, "rounds": args.rounds,
                                 **report(samples, args)}
        load = os.getloadavg()
        saved["load_average"] = {"before": load_before, "after": list(load)}
        console.print(f"load average: {load_before:.2f} before, {load[0]:.2f} / {load[1]:.2f} "
                      f"/ {load[2]:.2f} after (1/5/15 min) on {os.cpu_count()} CPUs; compare "
                      "paths within one run only")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(saved, indent=2) + "\n")
        console.print(f"saved to {args.json}")
    finally:
        await asyncio.to_thread(pg.close)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.event_store", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=4_000, help="per path and round")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--streams", type=int, default=20, help="per writer")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--json", type=Path, default=Path(".cache") / "bench-event-store.json")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
