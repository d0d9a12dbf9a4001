"""`python -m bench.outbox` (part of `make bench`): the transactional outbox on SQLite and
PostgreSQL against a direct publish, measured in one run on one local broker.

- committed/s: transactions that each insert one state row and its outbox event (4 writers).
- relayed/s: a relay draining that backlog to Kafka (batches of 500, acks=all).
- latency: commits paced at 200/s with the relay running (woken on commit); from the outbox
  row's insert, inside the committing transaction, to Kafka's acknowledgement (what the
  relay's metrics hook reports). Baseline: `bus.publish()` call to acknowledgement, same pace.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import Column, Integer, MetaData, String, insert
from sqlalchemy import Table as SqlTable

from bench.__main__ import BENCH_JAVA_OPTS
from bench.payload import BenchEvent, Payload, make_blob, now_ns
from core.config import KafkaConfig
from core.db.engine import Database
from core.messaging.event_bus import KafkaEventBus
from core.messaging.kafka_client import KafkaAdmin, KafkaProducer
from core.messaging.outbox import OutboxRelay, OutboxWriter, lease_table, outbox_table
from core.messaging.serialization import EventRegistry, EventSerializer

console = Console(width=120)
WRITERS = 4
PACE_PER_SECOND = 200

metadata = MetaData()
orders = SqlTable("orders", metadata, Column("id", String(36), primary_key=True),
                  Column("amount", Integer, nullable=False))
outbox_table(metadata)
lease_table(metadata)


class LatencyProbe:
    """The relay's metrics hook, keeping every latency it reports."""

    def __init__(self) -> None:
        self.latencies: list[float] = []

    def published(self, count: int, latencies: Sequence[float]) -> None:
        self.latencies.extend(latencies)

    def backlog(self, count: int) -> None:
        return None


async def _until(check: Callable[[], bool], failure: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        await asyncio.sleep(0.05)


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _event(blob: str, i: int) -> BenchEvent:
    return BenchEvent(key=f"order-{i % 100}", data=Payload(seq=i, sent_ns=now_ns(), blob=blob))


async def _commit(db: Database, writer: OutboxWriter, topic: str, blob: str, start: int,
                  count: int) -> None:
    for i in range(start, start + count):
        async with db.transaction() as session:
            await session.execute(insert(orders).values(id=str(uuid.uuid4()), amount=i))
            await writer.add(session, topic, _event(blob, i))


async def measure_backend(name: str, url: str, cfg: KafkaConfig, n: int, paced: int,
                          blob: str) -> dict[str, float]:
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    events = EventRegistry()
    events.register(BenchEvent)
    writer = OutboxWriter(metadata, EventSerializer(events))
    producer = KafkaProducer(cfg)
    await producer.start()
    topic = f"bench-outbox-{name}-{uuid.uuid4().hex[:6]}"
    await KafkaAdmin(cfg).create_topics([topic], partitions=3)
    try:
        with console.status(f"{name}: committing {n:,} state changes with their events..."):
            started = time.perf_counter()
            share = n // WRITERS
            await asyncio.gather(*[_commit(db, writer, topic, blob, w * share, share)
                                   for w in range(WRITERS)])
            committed = share * WRITERS / (time.perf_counter() - started)
        relay = OutboxRelay(db, producer, metadata, owner=f"bench-{name}")
        with console.status(f"{name}: relaying the backlog to Kafka..."):
            started = time.perf_counter()
            sent = 0
            while batch := await relay.publish_batch():
                sent += batch
            relayed = sent / (time.perf_counter() - started)
        probe = LatencyProbe()
        live = OutboxRelay(db, producer, metadata, owner=f"bench-{name}-live", metrics=probe)
        writer.on_commit(live.notify)
        await live.start()
        await _until(lambda: live.holds_lease, "the relay never took the lease")
        with console.status(f"{name}: {paced} paced commits with the relay running..."):
            started = time.perf_counter()
            for i in range(paced):
                delay = started + i / PACE_PER_SECOND - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await _commit(db, writer, topic, blob, n + i, 1)
            await _until(lambda: len(probe.latencies) >= paced, "paced events not relayed")
        await live.stop()
        return {"committed": committed, "relayed": relayed,
                "p50": _pct(probe.latencies, 0.5), "p99": _pct(probe.latencies, 0.99)}
    finally:
        await producer.stop()
        await db.dispose()


async def measure_direct(cfg: KafkaConfig, n: int, paced: int, blob: str) -> dict[str, float]:
    """The baseline: the same events published straight to Kafka, no database involved."""
    bus = KafkaEventBus(cfg)
    bus.events.register(BenchEvent)
    await bus.start()
    topic = f"bench-direct-{uuid.uuid4().hex[:6]}"
    await KafkaAdmin(cfg).create_topics([topic], partitions=3)
    try:
        await bus.publish_many(topic, [_event(blob, i) for i in range(500)])  # warm-up
        started = time.perf_counter()
        for chunk in range(0, n, 500):
            await bus.publish_many(topic, [_event(blob, i) for i in range(chunk, chunk + 500)])
        rate = n / (time.perf_counter() - started)
        latencies: list[float] = []

        async def one(i: int) -> None:
            t = time.perf_counter()
            await bus.publish(topic, _event(blob, i))
            latencies.append(time.perf_counter() - t)

        tasks, started = [], time.perf_counter()
        for i in range(paced):
            delay = started + i / PACE_PER_SECOND - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
        return {"committed": rate, "relayed": rate, "p50": _pct(latencies, 0.5),
                "p99": _pct(latencies, 0.99)}
    finally:
        await bus.stop()


def report(results: dict[str, dict[str, float]], n: int, paced: int) -> None:
    base = results["direct publish"]
    table = Table(title=f"Transactional outbox: {n:,} events per backend, {paced} paced for "
                        f"latency ({PACE_PER_SECOND}/s)")
    for column in ("path", "committed/s ↑", "relayed/s ↑", "p50 ms ↓", "p99 ms ↓",
                   "relayed vs direct", "p50 vs direct"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, r in results.items():
        table.add_row(name, f"{r['committed']:,.0f}", f"{r['relayed']:,.0f}", f"{r['p50']:.2f}",
                      f"{r['p99']:.2f}", f"{r['relayed'] / base['relayed']:.2f}x",
                      f"{r['p50'] / base['p50']:.2f}x")
    console.print(table)
    console.print("direct publish: no database; its 'committed' and 'relayed' are the same "
                  "publish rate. Outbox latency: row insert (inside the committing transaction) "
                  "to Kafka ack, as the relay's metrics hook sees it; direct: publish() to ack.")


async def run(n: int, paced: int) -> None:
    from devinfra.kafka import KafkaBroker
    from devinfra.postgres import PostgresServer

    os.environ.setdefault("KFM_KAFKA_JAVA_OPTS", BENCH_JAVA_OPTS)
    blob = make_blob(512)
    with console.status("starting Kafka and PostgreSQL..."):
        broker = await asyncio.to_thread(KafkaBroker.start)
        pg = await asyncio.to_thread(PostgresServer.start)
    try:
        cfg = KafkaConfig(broker.bootstrap_servers, "bench-outbox", "bench-outbox")
        results = {"direct publish": await measure_direct(cfg, n, paced, blob)}
        with tempfile.TemporaryDirectory() as tmp:
            results["outbox on SQLite"] = await measure_backend(
                "sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}", cfg, n, paced, blob)
        results["outbox on PostgreSQL"] = await measure_backend("postgres", pg.url, cfg, n,
                                                                paced, blob)
        report(results, n, paced)
        load = os.getloadavg()[0]
        console.print(f"load average after the run: {load:.2f} on {os.cpu_count()} CPUs; one "
                      "round, so expect ±20% between runs on a busy machine")
    finally:
        await asyncio.to_thread(pg.close)
        await asyncio.to_thread(broker.close)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.outbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=4_000)
    parser.add_argument("--paced", type=int, default=400)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.paced))


if __name__ == "__main__":
    main()
