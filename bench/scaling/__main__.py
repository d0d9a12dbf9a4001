"""`python -m bench.scaling`: how the core consumer scales with keys and with handler I/O.

One local broker; for 1, 10, 100 and 1,000 distinct keys, and for a handler that does nothing
and one that awaits 1 ms of I/O (`asyncio.sleep(0.001)`), the real `KafkaEventBus` consumer
(default settings: `max_in_flight=1000`, 3 partitions) is measured twice:

- throughput: a backlog of records (keys round-robin) drained by a new group, first to last
  handled record (capped at a few seconds, so a slow configuration does not take minutes);
- latency: records published at a steady 500/s (below every row's capacity, close to the
  one-key, 1 ms I/O row's), time from the publish call to the end of the handler, p50 and p99.

    uv run python -m bench.scaling            # a minute or two
    uv run python -m bench.scaling --quick    # a smoke run

How to read it: records of one key run one after another (order per key), records of
different keys run concurrently, up to `max_in_flight` unfinished at a time. So with a handler
that waits for I/O, throughput grows with the number of keys: one key is bounded by one wait
after another (at most 1,000 records/s for 1 ms; asyncio's `sleep(0.001)` takes 1-2 ms, so
expect 500-1,000/s), 10 keys allow about ten times that, and from about 100 keys on the CPU
(decode, dispatch, bookkeeping, one timer per wait) is the limit, not the waits. With a
handler that does nothing, keys change little: the cost per record is the same whichever
lane it runs in, plus a little for starting a lane's worker. Latency below capacity is a few
milliseconds plus the producer's 5 ms linger; a row near its capacity (one key with 1 ms I/O
at 500/s) queues, and its latency grows with the backlog. If your handlers wait on I/O and
throughput is low, look first at how many distinct keys your events carry: a key is the unit
of order, and so the unit of concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from bench.common.kafka import wait_for_leaders
from bench.common.payload import BenchEvent, Payload, make_blob, now_ns
from bench.common.stats import LatencySummary, span_rate
from core.config import KafkaConfig
from core.messaging.event_bus import KafkaEventBus
from core.messaging.kafka_client import KafkaAdmin

RESULTS_PATH = Path(".cache") / "bench-scaling.json"
KEYS = (1, 10, 100, 1_000)
HANDLERS = ("none", "1 ms I/O")
PARTITIONS = 3
LATENCY_RATE = 500.0
"""Records per second offered in the latency measurement: below every row's capacity."""


@dataclass(frozen=True, slots=True)
class Row:
    keys: int
    handler: str
    rate: float
    handled: int
    p50_ms: float
    p99_ms: float
    latency_count: int


def _handler_body(kind: str) -> Callable[[], Awaitable[None]] | None:
    if kind == "none":
        return None

    async def io() -> None:
        await asyncio.sleep(0.001)

    return io


class Scaling:
    def __init__(self, bootstrap: str, run_id: str, messages: int, cap: float,
                 latency_seconds: float) -> None:
        self.bootstrap, self.run_id = bootstrap, run_id
        self.messages, self.cap, self.latency_seconds = messages, cap, latency_seconds
        self.blob = make_blob(512)
        self._admin = KafkaAdmin(self._config("bench-scaling-admin"))
        self._metadata = AdminClient({"bootstrap.servers": bootstrap})

    def _config(self, group: str) -> KafkaConfig:
        return KafkaConfig(bootstrap_servers=self.bootstrap, client_id="bench-scaling",
                           consumer_group=group)

    def _bus(self, group: str) -> KafkaEventBus:
        bus = KafkaEventBus(self._config(group))
        bus.events.register(BenchEvent)
        return bus

    def _event(self, seq: int, keys: int) -> BenchEvent:
        return BenchEvent(data=Payload(seq=seq, sent_ns=now_ns(), blob=self.blob),
                          key=f"k{seq % keys}")

    async def _topic(self, name: str) -> str:
        topic = f"scaling-{self.run_id}-{name}"
        await self._admin.create_topics([topic], partitions=PARTITIONS, replication_factor=1)
        await asyncio.to_thread(wait_for_leaders, self._metadata, topic, PARTITIONS)
        return topic

    async def fill(self, keys: int) -> str:
        """A backlog of `messages` records over `keys` keys, shared by both handlers."""
        topic = await self._topic(f"backlog-{keys}")
        bus = self._bus("bench-scaling-publisher")
        await bus.start()
        try:
            await bus.publish_many(topic, [self._event(i, keys) for i in range(self.messages)])
        finally:
            await bus.stop()
        return topic

    async def throughput(self, topic: str, kind: str) -> tuple[float, int]:
        """Drain the backlog in a new group; (rate, records handled before the cap)."""
        body = _handler_body(kind)
        seen: set[int] = set()
        first = last = 0
        done = asyncio.Event()

        async def handle(event: BenchEvent) -> None:
            nonlocal first, last
            if body is not None:
                await body()
            now = time.perf_counter_ns()
            if not seen:
                first = now
            seen.add(event.data.seq)
            last = now
            if len(seen) >= self.messages or now - first > self.cap * 1e9:
                done.set()

        bus = self._bus(f"{topic}-{kind}")
        bus.subscribe(topic, handle)
        await bus.start()
        try:
            await asyncio.wait_for(done.wait(), timeout=60 + self.cap)
        finally:
            await bus.stop()
        return span_rate(len(seen), first, last), len(seen)

    async def latency(self, keys: int, kind: str) -> LatencySummary:
        """Publish at `LATENCY_RATE` while the consumer runs; publish call to handler end."""
        topic = await self._topic(f"latency-{keys}-{kind.split()[0]}")
        body = _handler_body(kind)
        latencies: list[int] = []
        live, done = asyncio.Event(), asyncio.Event()
        total = int(LATENCY_RATE * self.latency_seconds)

        async def handle(event: BenchEvent) -> None:
            if body is not None:
                await body()
            if event.data.seq < 0:
                live.set()
            else:
                latencies.append(time.perf_counter_ns() - event.data.sent_ns)
                if len(latencies) >= total:
                    done.set()

        consumer, publisher = self._bus(f"{topic}-group"), self._bus("bench-scaling-pub")
        consumer.subscribe(topic, handle)
        await consumer.start()
        await publisher.start()
        try:
            while not live.is_set():  # until the group is joined and fetching
                await publisher.publish(topic, self._event(-1, keys))
                try:
                    await asyncio.wait_for(live.wait(), timeout=0.5)
                except TimeoutError:
                    pass
            await asyncio.sleep(0.3)
            acks = []
            started = time.perf_counter()
            for i in range(total):
                delay = started + i / LATENCY_RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                acks.append(asyncio.ensure_future(
                    publisher.publish(topic, self._event(i, keys))))
            await asyncio.gather(*acks)
            try:
                await asyncio.wait_for(done.wait(), timeout=30)
            except TimeoutError:
                pass  # measured on what arrived
        finally:
            await publisher.stop()
            await consumer.stop()
        return LatencySummary.of(latencies)


async def run(console: Console, scaling: Scaling) -> list[Row]:
    rows = []
    for keys in KEYS:
        with console.status(f"[bold]{keys:,} keys[/]: publishing {scaling.messages:,} …"):
            topic = await scaling.fill(keys)
        for kind in HANDLERS:
            with console.status(f"[bold]{keys:,} keys, handler {kind}[/]: draining …"):
                rate, handled = await scaling.throughput(topic, kind)
            with console.status(f"[bold]{keys:,} keys, handler {kind}[/]: latency …"):
                lat = await scaling.latency(keys, kind)
            rows.append(Row(keys, kind, rate, handled, lat.p50_ms, lat.p99_ms, lat.count))
            console.log(f"{keys:>5,} keys, handler {kind:<8}: {rate:>9,.0f} msg/s "
                        f"({handled:,} handled); latency at {LATENCY_RATE:g}/s p50 "
                        f"{lat.p50_ms:.2f} ms, p99 {lat.p99_ms:.2f} ms")
    return rows


def table(rows: list[Row]) -> Table:
    out = Table(title="Core consumer: throughput and latency by keys and handler I/O "
                      f"(max_in_flight=1000, {PARTITIONS} partitions)",
                title_style="bold", header_style="bold")
    out.add_column("keys", justify="right")
    for kind in HANDLERS:
        out.add_column(f"{kind}: msg/s", justify="right")
        out.add_column(f"{kind}: p50 ms", justify="right")
        out.add_column(f"{kind}: p99 ms", justify="right")
    for keys in KEYS:
        cells = [f"{keys:,}"]
        for kind in HANDLERS:
            row = next(r for r in rows if r.keys == keys and r.handler == kind)
            cells += [f"{row.rate:,.0f}", f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}"]
        out.add_row(*cells)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000,
                        help="backlog records per key count (default 20,000)")
    parser.add_argument("--cap", type=float, default=4.0,
                        help="seconds a throughput measurement may take (default 4)")
    parser.add_argument("--latency-seconds", type=float, default=2.0,
                        help=f"seconds of publishing at {LATENCY_RATE:g}/s (default 2)")
    parser.add_argument("--quick", action="store_true", help="5,000 records, 1 s caps")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.cap, args.latency_seconds = 5_000, 1.0, 1.0
    console = Console(width=None if sys.stdout.isatty() else 110)
    os.environ.setdefault("KFM_KAFKA_JAVA_OPTS", "-XX:TieredStopAtLevel=4 -Xmx1g")
    from devinfra.kafka import KafkaBroker

    load_before = os.getloadavg()
    console.log(f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before starting")
    started = time.monotonic()
    with console.status("[bold]starting a local Kafka broker[/] …"):
        broker = KafkaBroker.start()
    with broker:
        scaling = Scaling(broker.bootstrap_servers, uuid.uuid4().hex[:8], args.messages,
                          args.cap, args.latency_seconds)
        rows = asyncio.run(run(console, scaling))
        del scaling  # its admin clients go before the broker, not reconnecting to it after
    load_after = os.getloadavg()
    console.print(table(rows))
    console.print(f"• throughput: {args.messages:,} records drained per row (capped at "
                  f"{args.cap:g} s); latency: {LATENCY_RATE:g} records/s for "
                  f"{args.latency_seconds:g} s, publish call → handler end.\n"
                  f"• Machine: load average before {load_before[0]:.2f}, after "
                  f"{load_after[0]:.2f}.")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_seconds": round(time.monotonic() - started, 1),
        "settings": {"messages": args.messages, "cap_seconds": args.cap,
                     "latency_rate": LATENCY_RATE, "latency_seconds": args.latency_seconds,
                     "partitions": PARTITIONS, "max_in_flight": 1000},
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before,
                    "loadavg_after": load_after},
        "rows": [asdict(r) for r in rows],
    }, indent=2) + "\n")
    console.print(f"results written to [bold]{args.output}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
