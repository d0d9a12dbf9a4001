"""`python -m bench.saga` (part of `make bench`): sagas completed per second, every step over
Kafka, against the same steps as direct request-reply calls without persistence (the floor).

- saga: a three-step saga (`reserve` → `charge` → `confirm`, each with a compensation that is
  never needed) run by `SagaOrchestrator` on PostgreSQL: each step is an outbox row relayed
  to Kafka, a participant that handles it once (inbox) and answers through its outbox, and a
  reply applied with a conditional update, the history and the next command in one
  transaction. `--sagas` started at once; duration per saga from its start to its
  completion, as the database stamped them.
- floor: the same three commands sent one after the other with `RequestReplyClient` to a
  `RequestResponder` that answers at once: no database, no inbox, no outbox; the same number
  of flows at once.

One local broker and one PostgreSQL, both in this run; compare the two rows within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from sqlalchemy import MetaData, func, select

from bench.common.kafka import BENCH_JAVA_OPTS
from bench.common.stats import percentile
from core.app import OUTBOX_WRITER
from core.config import KafkaConfig
from core.db import Database
from core.messaging import (
    DatabaseIdempotencyStore,
    EventRegistry,
    HandlerRegistry,
    IntegrationEvent,
    KafkaAdmin,
    KafkaEventBus,
    MessageContext,
    OutboxRelay,
    OutboxWriter,
    RequestReplyClient,
    RequestResponder,
    messaging_tables,
)
from core.messaging.outbox import relay_producer
from core.runtime import Runtime
from core.saga import (
    COMPLETED,
    SAGAS,
    Compensation,
    SagaDefinition,
    SagaOrchestrator,
    SagaStep,
    participant,
    saga_replies,
    saga_tables,
)

console = Console(width=120)
STEPS = ("reserve", "charge", "confirm")


class Command(BaseModel):
    action: str
    flow: str


class Do(IntegrationEvent[Command]):
    EVENT_TYPE = "bench.saga.do"


class Did(IntegrationEvent[Command]):
    EVENT_TYPE = "bench.saga.did"


class Flow(BaseModel):
    flow: str


def events() -> EventRegistry:
    registry = EventRegistry()
    registry.register(Do)
    registry.register(Did)
    return registry


def definition(topic: str, replies: str) -> SagaDefinition[Flow]:
    def step(name: str) -> SagaStep[Flow]:
        return SagaStep(name, topic, lambda d: Do(data=Command(action=name, flow=d.flow)),
                        success=Did, timeout=120, compensation=Compensation(
                            lambda d: Do(data=Command(action=f"undo-{name}", flow=d.flow)),
                            success=Did))
    return SagaDefinition("bench", Flow, replies, [step(name) for name in STEPS])


participants = HandlerRegistry(events())


@participant(participants, Do, name="bench.saga.do")
async def do(command: Do, ctx: MessageContext) -> Did:
    return command.caused(Did, command.data)


async def run_sagas(url: str, cfg: KafkaConfig, n: int) -> dict[str, float]:
    metadata = MetaData()
    messaging_tables(metadata)
    tables = saga_tables(metadata)
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
    topic, replies = f"bench-saga-{os.getpid()}", f"bench-saga-replies-{os.getpid()}"
    await KafkaAdmin(cfg).create_topics([topic, replies], partitions=6)
    saga = definition(topic, replies)
    runtime = Runtime()
    bus = KafkaEventBus(cfg, events(), idempotency=DatabaseIdempotencyStore(db, metadata),
                        runtime=runtime)
    writer = OutboxWriter(metadata, bus.serializer)
    publisher = relay_producer(cfg)
    relay = OutboxRelay(db, publisher, metadata, owner="bench", poll_interval=0.05)
    writer.on_commit(relay.notify)
    sagas = SagaOrchestrator(db, writer, tables, [saga])
    runtime.add(OUTBOX_WRITER, writer)
    runtime.add(SAGAS, sagas)
    handlers = HandlerRegistry(bus.events)
    saga_replies(handlers, saga)
    consumers = [bus.subscribe(replies, handlers, group_id="bench-orchestrator"),
                 bus.subscribe(topic, participants, group_id="bench-participants")]
    await bus.start()
    await publisher.start()
    await relay.start()
    await sagas.start()
    try:
        for consumer in consumers:
            await consumer.wait_assigned()
        await _start_sagas(db, sagas, saga, 20)  # warm-up: connections, caches, leaders
        await _wait(db, tables, 20)
        started = time.perf_counter()
        await _start_sagas(db, sagas, saga, n)
        await _wait(db, tables, n + 20)
        elapsed = time.perf_counter() - started
        t = tables.instances
        async with db.session() as session:
            rows = (await session.execute(select(t.c.created_at, t.c.updated_at)
                                          .order_by(t.c.created_at).offset(20))).all()
        durations = [(row.updated_at - row.created_at).total_seconds() for row in rows]
    finally:
        await sagas.stop()
        await bus.stop()
        await relay.stop()
        await publisher.stop(2.0)
        await db.dispose()
    return {"rate": n / elapsed, "p50": percentile(durations, 50) * 1000,
            "p99": percentile(durations, 99) * 1000, "seconds": elapsed}


async def _start_sagas(db: Database, sagas: SagaOrchestrator, saga: SagaDefinition[Flow],
                       n: int) -> None:
    async def one(i: int) -> None:
        async with db.transaction() as session:
            await sagas.begin(session, saga, Flow(flow=str(i)))

    for chunk in range(0, n, 100):
        await asyncio.gather(*[one(i) for i in range(chunk, min(n, chunk + 100))])


async def _wait(db: Database, tables: Any, n: int) -> None:
    t = tables.instances
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        async with db.session() as session:
            done = await session.scalar(select(func.count()).select_from(t)
                                        .where(t.c.status == COMPLETED))
        if done == n:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("sagas did not complete in 600s")


async def run_floor(cfg: KafkaConfig, n: int) -> dict[str, float]:
    topic = f"bench-saga-rr-{os.getpid()}"
    await KafkaAdmin(cfg).create_topics([topic], partitions=6)
    responder = RequestResponder(events=events())

    @responder.responds(Do)
    async def answer(request: Do) -> Did:
        return request.caused(Did, request.data)

    bus = KafkaEventBus(cfg, responder.handlers.events)
    responder.bind(bus.producer)
    consumer = bus.subscribe(topic, responder.handlers, group_id="bench-responder")
    await bus.start()
    client = RequestReplyClient(cfg, bus.producer, responder.handlers.events,
                                instance_id=f"bench-{os.getpid()}")
    await client.start()
    try:
        await consumer.wait_assigned()

        async def flow(i: int) -> float:
            begun = time.perf_counter()
            for action in STEPS:
                await client.send_request(topic, Do(data=Command(action=action, flow=str(i)),
                                                    key=str(i)), timeout=120)
            return time.perf_counter() - begun

        await asyncio.gather(*[flow(i) for i in range(20)])
        started = time.perf_counter()
        durations = await asyncio.gather(*[flow(i) for i in range(n)])
        elapsed = time.perf_counter() - started
    finally:
        await client.stop()
        await bus.stop()
    return {"rate": n / elapsed, "p50": percentile(durations, 50) * 1000,
            "p99": percentile(durations, 99) * 1000, "seconds": elapsed}


async def run(args: argparse.Namespace) -> None:
    from devinfra.kafka import KafkaBroker
    from devinfra.postgres import PostgresServer

    os.environ.setdefault("KFM_KAFKA_JAVA_OPTS", BENCH_JAVA_OPTS)
    load_before = os.getloadavg()[0]
    with console.status("starting PostgreSQL and Kafka"):
        pg = await asyncio.to_thread(PostgresServer.start)
        broker = await asyncio.to_thread(KafkaBroker.start)
    try:
        cfg = KafkaConfig(broker.bootstrap_servers, "bench-saga", "bench-saga")
        results: dict[str, list[dict[str, float]]] = {"saga (PostgreSQL)": [],
                                                      "request-reply floor": []}
        for r in range(args.rounds):
            with console.status(f"round {r + 1}: {args.sagas} request-reply flows..."):
                results["request-reply floor"].append(await run_floor(cfg, args.sagas))
            with console.status(f"round {r + 1}: {args.sagas} sagas..."):
                results["saga (PostgreSQL)"].append(await run_sagas(pg.url, cfg, args.sagas))
        table = Table(title=f"Sagas of 3 steps over Kafka: {args.sagas} at once, median of "
                            f"{args.rounds} rounds")
        for column in ("path", "flows/s ↑", "p50 ms ↓", "p99 ms ↓", "vs floor"):
            table.add_column(column, justify="right", no_wrap=True)
        medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                   for name, rs in results.items()}
        floor = medians["request-reply floor"]
        for name, m in medians.items():
            table.add_row(name, f"{m['rate']:,.0f}", f"{m['p50']:.1f}", f"{m['p99']:.1f}",
                          f"{m['rate'] / floor['rate']:.2f}x")
        console.print(table)
        load = os.getloadavg()
        console.print(f"load average: {load_before:.2f} before, {load[0]:.2f} after on "
                      f"{os.cpu_count()} CPUs; compare rows within one run only")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"sagas": args.sagas, "rounds": args.rounds,
                                         "results": results, "medians": medians}, indent=2)
                             + "\n")
        console.print(f"saved to {args.json}")
    finally:
        await asyncio.to_thread(broker.close)
        await asyncio.to_thread(pg.close)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.saga", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sagas", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path(".cache") / "bench-saga.json")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
