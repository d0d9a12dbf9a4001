"""`python -m bench.horizontal` (part of `make bench`): consume throughput with 1, 2 and 3
consumer PROCESSES in one group, on a topic of 6 partitions, with a handler that awaits 5 ms
of I/O (`asyncio.sleep(0.005)`) and 6,000 keys; how close to linear (1 process x N) it is.

One local broker; one backlog, written once, that every configuration's new group reads from
the start. For each configuration the processes (bench/horizontal/worker.py, a real
`KafkaEventBus` consumer each) are started, and the rate is taken only once the group is
stable (every process a member, all 6 partitions assigned, described by the broker): handled
records summed over the processes, over a window of `--window` seconds, then the group is
checked to be the same one (no rebalance inside the window) and the backlog not used up.
The processes' CPU time over the window is read from /proc, per record handled.

Two settings of `max_in_flight` (records unfinished at once, per process):

- 12: the I/O bounds each process (12 / 5 ms: at most 2,400 records/s, less the time
  asyncio's sleep overshoots), as it does for a handler that waits on a pool of a dozen
  database connections. Throughput should grow with the processes: the aim, >= 0.8 of linear
  at 2 and 3 processes, is for this row.
- 1000, the default: with 6,000 keys the I/O allows 200,000 records/s per process, so the CPU
  (decode, dispatch, one timer per wait) is the bound, and processes add throughput only
  while there are idle cores: on a 2-core machine, shared with the broker and whatever else
  runs, 2 and 3 processes cannot be linear. Shown for what it says about cores, no aim.

    uv run --group bench python -m bench.horizontal            # about 2 minutes
    uv run --group bench python -m bench.horizontal --quick    # under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from bench.common import aims
from bench.common.kafka import BENCH_JAVA_OPTS, wait_for_leaders
from bench.common.paths import ROOT
from bench.common.payload import BenchEvent, Payload, make_blob, now_ns
from bench.gateway.procs import cpu_seconds
from core.config import KafkaConfig
from core.messaging.event_bus import KafkaEventBus
from core.messaging.kafka_client import KafkaAdmin

RESULTS_PATH = Path(".cache") / "bench-horizontal.json"
PARTITIONS = 6
KEYS = 6_000
PROCESSES = (1, 2, 3)
IO_BOUND, DEFAULT = 12, 1000
AIM = 0.8
"""Of linear (1 process's rate x N), for the I/O-bound row at 2 and 3 processes."""

console = Console(width=None if sys.stdout.isatty() else 120)


@dataclass(frozen=True, slots=True)
class Result:
    max_in_flight: int
    processes: int
    rate: float
    cpu_us: float
    """CPU time of the consumer processes per record handled, µs."""
    handled_before: int
    """Records handled before the window opened (the group forming, the first fetches)."""


class Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, bootstrap: str, topic: str, group: str, in_flight: int) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.horizontal.worker", bootstrap, topic, group,
            str(in_flight), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        return cls(process)

    async def line(self, timeout: float = 60) -> str:
        assert self.process.stdout is not None
        return (await asyncio.wait_for(self.process.stdout.readline(), timeout)).decode().strip()

    async def handled(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.write(b"status\n")
        await self.process.stdin.drain()
        return int((await self.line()).split()[1])

    async def stop(self) -> None:
        if self.process.returncode is None and self.process.stdin is not None:
            with contextlib.suppress(Exception):
                self.process.stdin.write(b"quit\n")
                await self.process.stdin.drain()
                await asyncio.wait_for(self.process.wait(), 30)
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def group_members(admin: AdminClient, group: str) -> frozenset[str] | None:
    """The member ids of `group` when it is stable with all partitions assigned, else None."""
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    if description.state != ConsumerGroupState.STABLE:
        return None
    assigned = sum(len(m.assignment.topic_partitions) for m in description.members)
    if assigned != PARTITIONS:
        return None
    return frozenset(m.member_id for m in description.members)


class Horizontal:
    def __init__(self, bootstrap: str, backlog: int, window: float) -> None:
        self.bootstrap, self.backlog, self.window = bootstrap, backlog, window
        self.run_id = uuid.uuid4().hex[:8]
        self.topic = f"horizontal-{self.run_id}"
        self.metadata = AdminClient({"bootstrap.servers": bootstrap})

    async def fill(self) -> float:
        """The backlog: `backlog` records over KEYS keys; returns records/s published."""
        config = KafkaConfig(bootstrap_servers=self.bootstrap, client_id="bench-horizontal",
                             consumer_group="bench-horizontal-pub")
        await KafkaAdmin(config).create_topics([self.topic], partitions=PARTITIONS,
                                               replication_factor=1)
        await asyncio.to_thread(wait_for_leaders, self.metadata, self.topic, PARTITIONS)
        bus = KafkaEventBus(config)
        bus.events.register(BenchEvent)
        blob = make_blob(512)
        await bus.start()
        started = time.perf_counter()
        try:
            for low in range(0, self.backlog, 10_000):
                await bus.publish_many(self.topic, [
                    BenchEvent(data=Payload(seq=i, sent_ns=now_ns(), blob=blob),
                               key=f"k{i % KEYS}")
                    for i in range(low, min(self.backlog, low + 10_000))])
        finally:
            await bus.stop()
        return self.backlog / (time.perf_counter() - started)

    async def measure(self, in_flight: int, count: int) -> Result:
        group = f"{self.topic}-{in_flight}-{count}"
        workers = [await Worker.start(self.bootstrap, self.topic, group, in_flight)
                   for _ in range(count)]
        try:
            for worker in workers:
                if (line := await worker.line(120)) != "ready":
                    raise RuntimeError(f"a consumer process did not start: {line!r}")
            members = await self._stable(group, count)
            await asyncio.sleep(1.0)  # the fetch queues of the last partitions to move fill
            pids = [w.process.pid for w in workers]
            before = sum([await w.handled() for w in workers])
            cpu_before, started = cpu_seconds(pids), time.perf_counter()
            await asyncio.sleep(self.window)
            after = sum([await w.handled() for w in workers])
            cpu_after, ended = cpu_seconds(pids), time.perf_counter()
            if await asyncio.to_thread(group_members, self.metadata, group) != members:
                raise RuntimeError(f"{count} processes: the group rebalanced inside the window")
            if after >= self.backlog:
                raise RuntimeError(f"{count} processes at max_in_flight={in_flight}: the "
                                   f"backlog ran out inside the window; raise --backlog")
        finally:
            for worker in workers:
                await worker.stop()
        handled = after - before
        return Result(in_flight, count, handled / (ended - started),
                      1e6 * (cpu_after - cpu_before) / max(1, handled), before)

    async def _stable(self, group: str, count: int, timeout: float = 60) -> frozenset[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                members = await asyncio.to_thread(group_members, self.metadata, group)
                if members is not None and len(members) == count:
                    return members
            await asyncio.sleep(0.2)
        raise RuntimeError(f"group {group} not stable with {count} members after {timeout} s")


async def run(horizontal: Horizontal, settings: Sequence[int]) -> tuple[float, list[Result]]:
    with console.status(f"publishing the backlog: {horizontal.backlog:,} records"):
        published = await horizontal.fill()
    console.log(f"backlog: {horizontal.backlog:,} records, {KEYS:,} keys, {PARTITIONS} "
                f"partitions, published at {published:,.0f}/s")
    results = []
    for in_flight in settings:
        for count in PROCESSES:
            with console.status(f"max_in_flight={in_flight}, {count} process(es)"):
                result = await horizontal.measure(in_flight, count)
            results.append(result)
            console.log(f"max_in_flight={in_flight:>4}, {count} process(es): "
                        f"{result.rate:>8,.0f} records/s, {result.cpu_us:,.0f} µs CPU/record")
    return published, results


def table(results: list[Result], settings: Sequence[int]) -> Table:
    out = Table(title=f"Consume throughput by consumer processes in one group ({PARTITIONS} "
                      f"partitions, {KEYS:,} keys, handler awaits 5 ms)",
                title_style="bold", header_style="bold")
    out.add_column("max_in_flight", justify="right", no_wrap=True)
    for count in PROCESSES:
        out.add_column(f"{count} proc rec/s", justify="right")
        if count > 1:
            out.add_column("of linear", justify="right")
    out.add_column("CPU µs/rec (1 → 3)", justify="right")
    out.add_column("aim", justify="right")
    out.add_column("verdict", justify="center")
    for in_flight in settings:
        row = {r.processes: r for r in results if r.max_in_flight == in_flight}
        one = row[1].rate
        cells = [f"{in_flight:,}"]
        ratios = []
        for count in PROCESSES:
            cells.append(f"{row[count].rate:,.0f}")
            if count > 1:
                ratio = row[count].rate / (one * count)
                ratios.append(ratio)
                cells.append(f"{ratio:.2f}x")
        cells.append(f"{row[1].cpu_us:,.0f} → {row[PROCESSES[-1]].cpu_us:,.0f}")
        if in_flight == IO_BOUND:
            ok = all(r >= AIM for r in ratios)
            cells += [f"≥ {AIM:g}x", "[green]PASS" if ok else "[red]MISS"]
            aims.record("horizontal", f"consume, {', '.join(map(str, PROCESSES[1:]))} "
                        "processes vs linear (5 ms I/O handler)",
                        measured=" / ".join(f"{r:.2f}x" for r in ratios) + " of linear",
                        aim=f"≥ {AIM:g}x", met=ok)
        else:
            cells += ["—", "[dim]CPU-bound"]
        out.add_row(*cells)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.horizontal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=200_000,
                        help="records written once, read by every configuration (200,000)")
    parser.add_argument("--window", type=float, default=5.0,
                        help="seconds measured per configuration, once the group is stable (5)")
    parser.add_argument("--quick", action="store_true",
                        help="the I/O-bound row only, 2 s windows, a 40,000-record backlog")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    settings: tuple[int, ...] = (IO_BOUND, DEFAULT)
    if args.quick:
        args.backlog, args.window, settings = 40_000, 2.0, (IO_BOUND,)
    os.environ.setdefault("KFM_KAFKA_JAVA_OPTS", BENCH_JAVA_OPTS)
    from devinfra.kafka import KafkaBroker

    load_before = os.getloadavg()
    console.log(f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before starting")
    started = time.monotonic()
    with console.status("[bold]starting a local Kafka broker[/] …"):
        broker = KafkaBroker.start()
    with broker:
        horizontal = Horizontal(broker.bootstrap_servers, args.backlog, args.window)
        published, results = asyncio.run(run(horizontal, settings))
        del horizontal  # its admin client goes before the broker
    load_after = os.getloadavg()
    console.print(table(results, settings))
    console.print(
        f"• Each rate: records handled by all processes over {args.window:g} s once the group "
        f"is stable (a fresh group per row, reading one backlog of {args.backlog:,} records "
        f"published at {published:,.0f}/s); 'of linear' = rate / (1 process's rate x N).\n"
        f"• Aim: ≥ {AIM:g}x of linear at 2 and 3 processes when I/O bounds each process "
        f"(max_in_flight={IO_BOUND}); max_in_flight={DEFAULT} (the default) is bound by "
        f"the CPU here, and {os.cpu_count()} cores cannot give 3 processes a core each.\n"
        f"• Machine: {os.cpu_count()} CPUs, load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f}.")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_seconds": round(time.monotonic() - started, 1),
        "settings": {"backlog": args.backlog, "window": args.window, "partitions": PARTITIONS,
                     "keys": KEYS, "io_seconds": 0.005, "published_per_second": published},
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before,
                    "loadavg_after": load_after},
        "results": [asdict(r) for r in results],
    }, indent=2) + "\n")
    console.print(f"results written to [bold]{args.output}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
