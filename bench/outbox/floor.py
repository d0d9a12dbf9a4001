"""The outbox's floors for `python -m bench.outbox`: the same two rows per transaction (a state
row and an outbox row with the outbox's columns and the same serialized event), the same
writers and connections, written with the bare driver: asyncpg on PostgreSQL, aiosqlite (the
driver under SQLAlchemy's SQLite dialect) with the engine's pragmas on SQLite. No ORM, no
SQLAlchemy, no `core`.

The event is built and serialized by pydantic here too (`to_json`, straight to bytes): a typed
outbox cannot skip that, so it belongs to the floor.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from bench.common.payload import BenchEvent

Build = Callable[[int], BenchEvent]

PG_ORDER = "INSERT INTO orders (id, amount) VALUES ($1, $2)"
PG_OUTBOX = ("INSERT INTO outbox (event_id, topic, key, event_type, payload, headers, "
             "created_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, 0)")
LITE_ORDER = "INSERT INTO orders (id, amount) VALUES (?, ?)"
LITE_OUTBOX = ("INSERT INTO outbox (event_id, topic, key, event_type, payload, headers, "
               "created_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 0)")
LITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                "busy_timeout=10000")


def _row(event: BenchEvent) -> tuple[str, bytes, str]:
    """The event's id, its JSON bytes and its headers as JSON text, as the outbox stores them."""
    cls = type(event)
    event_id = str(event.event_id)
    headers = json.dumps([["event_type", cls.EVENT_TYPE], ["event_version",
                                                           str(cls.EVENT_VERSION)],
                          ["event_id", event_id], ["content-type", "application/json"]])
    return event_id, event.__pydantic_serializer__.to_json(event), headers


async def _writers(writers: int, count: int, one: Callable[[int, int], Awaitable[None]]) -> float:
    """Commits per second of `writers` tasks each running `one(writer, i)` for its share."""
    share = count // writers

    async def run(w: int) -> None:
        for i in range(w * share, (w + 1) * share):
            await one(w, i)

    started = time.perf_counter()
    await asyncio.gather(*(run(w) for w in range(writers)))
    return share * writers / (time.perf_counter() - started)


async def asyncpg_commits(dsn: str, topic: str, build: Build, count: int,
                          writers: int) -> float:
    """Transactions per second on raw asyncpg, one connection per writer."""
    import asyncpg  # type: ignore[import-untyped]

    conns = [await asyncpg.connect(dsn) for _ in range(writers)]
    try:
        async def one(w: int, i: int) -> None:
            conn: Any = conns[w]
            event = build(i)
            event_id, value, headers = _row(event)
            async with conn.transaction():
                await conn.execute(PG_ORDER, str(uuid.uuid4()), i)
                await conn.execute(PG_OUTBOX, event_id, topic, event.partition_key(),
                                   event.EVENT_TYPE, value, headers, datetime.now(UTC))

        return await _writers(writers, count, one)
    finally:
        for conn in conns:
            await conn.close()


async def aiosqlite_commits(path: str, topic: str, build: Build, count: int,
                            writers: int) -> float:
    """Transactions per second on raw aiosqlite, one connection per writer, the engine's
    pragmas (WAL, synchronous=NORMAL, busy timeout)."""
    import aiosqlite

    conns = [await aiosqlite.connect(path, timeout=10) for _ in range(writers)]
    try:
        for conn in conns:
            for pragma in LITE_PRAGMAS:
                await conn.execute(f"PRAGMA {pragma}")

        async def one(w: int, i: int) -> None:
            conn = conns[w]
            event = build(i)
            event_id, value, headers = _row(event)
            # sqlite3 begins the transaction at the first insert, as under SQLAlchemy
            await conn.execute(LITE_ORDER, (str(uuid.uuid4()), i))
            await conn.execute(LITE_OUTBOX, (event_id, topic, event.partition_key(),
                                             event.EVENT_TYPE, value, headers,
                                             datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")))
            await conn.commit()

        return await _writers(writers, count, one)
    finally:
        for conn in conns:
            await conn.close()
