"""The event store's floor for `python -m bench.event_store`: the same rows per append (the
stored event, and with `outbox` its outbox row, the same serialized event in both), the same
writers and connections, written with raw asyncpg: no SQLAlchemy, no `core`. The primary key
still refuses a stale position (a plain INSERT raises), so the floor keeps the store's
guarantee at the cheapest price the driver allows.

The event is serialized by pydantic here too (`to_json`, straight to bytes): a typed store
cannot skip that, so it belongs to the floor.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from core.messaging import BaseEvent

EVENT = ("INSERT INTO stored_events (stream_id, position, event_id, event_type, event_version, "
         "payload, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
OUTBOX = ("INSERT INTO outbox (event_id, topic, key, event_type, payload, headers, "
          "created_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, 0)")

Build = Callable[[str, int], BaseEvent[Any]]
"""The event a writer appends to `stream` as its `n`-th append there."""


async def asyncpg_appends(dsn: str, build: Build, streams: list[list[str]], per_writer: int,
                          *, outbox_topic: str | None) -> float:
    """Appends per second: each writer (its own connection) appends one event per
    transaction to its streams in turn, at the position it knows each stream is at."""
    import asyncpg  # type: ignore[import-untyped]

    conns = [await asyncpg.connect(dsn) for _ in streams]
    try:
        async def writer(w: int) -> None:
            conn: Any = conns[w]
            mine = streams[w]
            versions = dict.fromkeys(mine, 0)
            for i in range(per_writer):
                stream = mine[i % len(mine)]
                event = build(stream, i)
                cls = type(event)
                event_id, value = str(event.event_id), event.__pydantic_serializer__.to_json(
                    event)
                now = datetime.now(UTC)
                async with conn.transaction():
                    await conn.execute(EVENT, stream, versions[stream] + 1, event_id,
                                       cls.EVENT_TYPE, cls.EVENT_VERSION, value, now)
                    if outbox_topic is not None:
                        headers = json.dumps([["event_type", cls.EVENT_TYPE],
                                              ["event_version", str(cls.EVENT_VERSION)],
                                              ["event_id", event_id],
                                              ["content-type", "application/json"]])
                        await conn.execute(OUTBOX, event_id, outbox_topic, stream,
                                           cls.EVENT_TYPE, value, headers, now)
                versions[stream] += 1

        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(len(streams))))
        return per_writer * len(streams) / (time.perf_counter() - started)
    finally:
        for conn in conns:
            await conn.close()
