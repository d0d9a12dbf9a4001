"""`python -m bench.memory` (part of `make bench`): the resident memory of every service, the
gateway and a consumer, at rest, after traffic, under many connections or records in flight,
and whether it grows during a soak at a steady rate.

The whole system runs as real processes (`devinfra.stack`: Kafka, every service on SQLite,
the gateway), plus one bare consumer process (bench/memory/consumer.py: a `KafkaEventBus`
consumer whose handler can hold records). Memory is read from /proc (see procmem.py: RSS,
PSS, USS). Phases, in order:

1. idle: after start-up and a few quiet seconds;
2. after traffic: `--requests` GETs through the gateway to each service's cheapest
   authenticated read (16 at a time), and as many records through the consumer;
3. loaded: the gateway with 1,000 keep-alive connections open (each asking for the gateway's
   own /health/live every 3 s, inside uvicorn's 5 s keep-alive timeout); the consumer with
   1,000 records in flight (handlers awaiting an asyncio.Event, 1,000 keys);
4. (not with `--quick`) 100,000 more records through the consumer: its bus's in-memory
   idempotency store remembers that many event ids (about 20 MiB) and grows until then, by
   design; the soak is to see the steady state after it;
5. soak: `--rate` requests/s through the gateway (round-robin over the services) and
   `--rate` records/s into the consumer for `--soak` seconds, memory sampled every
   `--every` seconds. The first 20 % is a warm-up and is left out; over the rest, the
   least-squares slope of RSS, in KiB per minute.

The aim "no growth": PASS when the slope is at most the slope that ONE step of 1 MiB in the
middle of the window gives (1.5 x 1 MiB / window; 384 KiB/min over a 4-minute window). One
such step is not a leak: a new 1 MiB pymalloc arena, a malloc heap that grows once, a cache
that reaches its bound. A leak grows on: at the default rate, a 4-minute window catches about
65 bytes a request at the gateway (every request passes it) and about 330 bytes a request at
a service (a fifth of them reach each), i.e. a leaked object or two per request. The `--quick`
window (16 s) only catches gross leaks: it is a smoke run.

    uv run --group bench python -m bench.memory            # about 9 minutes
    uv run --group bench python -m bench.memory --quick    # about a minute (most of it start-up)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from bench.common import aims
from bench.common.paths import ROOT
from bench.common.payload import BenchEvent, Payload, make_blob, now_ns
from bench.memory import load, procmem
from bench.memory.procmem import Memory
from core.config import KafkaConfig
from core.messaging.event_bus import KafkaEventBus

RESULTS_PATH = Path(".cache") / "bench-memory.json"
ROUTES = {  # each service's cheapest authenticated read, through the gateway
    "auth": "/api/auth/me",
    "user": "/api/users/me",
    "driver": "/api/drivers/me",
    "notification": "/api/notifications",
    "order": "/api/orders",
}
CONSUMER = "consumer"
HELD_CONNECTIONS = 1_000
IN_FLIGHT = 1_000
IDEMPOTENCY_BOUND = 100_000
"""`InMemoryIdempotencyStore`'s default `max_entries`: the consumer remembers this many
handled event ids (about 20 MiB) before its memory stops growing."""
STEP_KIB = 1024
"""The one-off growth the soak's aim tolerates (see the module's docstring)."""
WARM_UP = 0.2

console = Console(width=None if sys.stdout.isatty() else 130)


@dataclass
class Row:
    """One process's numbers (KiB)."""

    name: str
    idle: Memory | None = None
    after: Memory | None = None
    loaded: Memory | None = None
    loaded_what: str = ""
    before_load: Memory | None = None
    released: Memory | None = None
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    """(seconds into the soak, RSS, USS)."""
    slope: float | None = None
    uss_slope: float | None = None


def mib(kib: float) -> str:
    return f"{kib / 1024:,.1f}"


def routes_file(directory: Path) -> Path:
    """The gateway's own route table with its default rate limit (600/60 per client) raised
    out of reach: one client sends everything here. The limiter still counts each request."""
    text = (ROOT / "gateway" / "routes.toml").read_text()
    default = 'rate_limit = "600/60"'
    if default not in text:
        raise RuntimeError(f"gateway/routes.toml has no `{default}` default to raise")
    path = directory / "routes.toml"
    path.write_text(text.replace(default, 'rate_limit = "1000000000/60"', 1))
    return path


class Consumer:
    """The consumer child process and the commands it takes (see consumer.py)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, bootstrap: str, topic: str) -> Consumer:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.memory.consumer", bootstrap, topic, f"{topic}-group",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        consumer = cls(process)
        line = await consumer._line(120)
        if line != "ready":
            raise RuntimeError(f"the consumer did not start: {line!r}")
        return consumer

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _line(self, timeout: float = 30) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        return raw.decode().strip()

    async def command(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return await self._line()

    async def status(self) -> tuple[int, int]:
        _, in_flight, handled = (await self.command("status")).split()
        return int(in_flight), int(handled)

    async def wait_for(self, what: str, done: Callable[[int, int], bool],
                       timeout: float = 120) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while True:
            in_flight, handled = await self.status()
            if done(in_flight, handled):
                return in_flight, handled
            if time.monotonic() > deadline:
                raise RuntimeError(f"the consumer: no {what} after {timeout:.0f} s "
                                   f"({in_flight} in flight, {handled} handled)")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.command("quit")
                await asyncio.wait_for(self.process.wait(), 30)
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


class Bench:
    def __init__(self, args: argparse.Namespace, pids: dict[str, int], gateway: str,
                 bootstrap: str, token: str) -> None:
        self.args, self.pids, self.gateway, self.bootstrap = args, pids, gateway, bootstrap
        self.token = token
        self.rows = {name: Row(name) for name in pids}
        self.counts: dict[str, Counter[int]] = {}
        self.notes: list[str] = []
        self.seq = 0
        self.blob = make_blob(512)

    def measure(self, name: str) -> Memory:
        return procmem.memory(self.pids[name])

    async def settle_and_measure(self, names: list[str], seconds: float) -> dict[str, Memory]:
        """Median of three readings after `seconds` of quiet (a reading taken during a
        collection or a burst of allocations is an outlier, not the resting size)."""
        await asyncio.sleep(seconds)
        readings: dict[str, list[Memory]] = {name: [] for name in names}
        for _ in range(3):
            for name in names:
                readings[name].append(self.measure(name))
            await asyncio.sleep(0.5)
        return {name: sorted(values, key=lambda m: m.rss)[1]
                for name, values in readings.items()}

    def events(self, count: int, keys: int) -> list[BenchEvent]:
        out = []
        for _ in range(count):
            self.seq += 1
            out.append(BenchEvent(data=Payload(seq=self.seq, sent_ns=now_ns(), blob=self.blob),
                                  key=f"k{self.seq % keys}"))
        return out

    async def run(self, consumer: Consumer, publisher: KafkaEventBus, topic: str) -> None:
        args, names = self.args, list(self.pids)
        quiet = 2.0 if args.quick else 5.0
        with console.status("idle: letting every process settle"):
            for name, value in (await self.settle_and_measure(names, quiet)).items():
                self.rows[name].idle = value
        urls = [f"{self.gateway}{path}" for path in ROUTES.values()]
        with console.status(f"after traffic: {args.requests:,} requests to each service "
                            f"through the gateway, {args.requests:,} records"):
            started = time.monotonic()
            async with load.session(self.token, 16) as client:
                counts = await load.burst(client, urls, args.requests, 16)
            took = time.monotonic() - started
            await publisher.publish_many(topic, self.events(args.requests, 1000))
            await consumer.wait_for("records", lambda _f, h: h >= args.requests)
        self.counts["traffic"] = counts
        console.log(f"traffic: {sum(counts.values()):,} requests in {took:.1f} s "
                    f"({sum(counts.values()) / took:,.0f}/s), statuses {dict(counts)}")
        for name, value in (await self.settle_and_measure(names, quiet)).items():
            self.rows[name].after = value
        await self.held_connections(quiet)
        await self.in_flight(consumer, publisher, topic, quiet)
        if not args.quick:
            await self.fill_idempotency(consumer, publisher, topic, quiet)
        await self.soak(consumer, publisher, topic, urls)

    async def fill_idempotency(self, consumer: Consumer, publisher: KafkaEventBus, topic: str,
                               quiet: float) -> None:
        """Records until the bus's in-memory idempotency store holds its bound (100,000
        event ids, about 200 bytes each): it grows by design until then, and the soak is to
        see the steady state, not that filling."""
        _, handled = await consumer.status()
        with console.status(f"the consumer: {IDEMPOTENCY_BOUND:,} records (the idempotency "
                            "store's bound)"):
            for _ in range(0, IDEMPOTENCY_BOUND, 10_000):
                await publisher.publish_many(topic, self.events(10_000, 1000))
            await consumer.wait_for("records", lambda _f, h: h >= handled + IDEMPOTENCY_BOUND,
                                    timeout=300)
        full = (await self.settle_and_measure([CONSUMER], quiet))[CONSUMER]
        self.notes.append(f"consumer: {mib(full.rss)} MiB RSS once its in-memory idempotency "
                          f"store is full ({handled + IDEMPOTENCY_BOUND:,} records handled); "
                          "the soak starts from there")

    async def held_connections(self, quiet: float) -> None:
        address = urllib.parse.urlsplit(self.gateway)
        assert address.hostname is not None and address.port is not None
        held = load.HeldConnections(address.hostname, address.port, "/health/live",
                                    HELD_CONNECTIONS)
        row = self.rows["gateway"]
        with console.status(f"loaded: {HELD_CONNECTIONS:,} keep-alive connections"):
            row.before_load = (await self.settle_and_measure(["gateway"], 0))["gateway"]
            try:
                await held.start()
                await asyncio.sleep(held.interval)  # one full round on every connection
                row.loaded = (await self.settle_and_measure(["gateway"], 0))["gateway"]
                sockets = procmem.open_sockets(self.pids["gateway"])
                open_now = held.open_now
            finally:
                await held.close()
        row.loaded_what = f"{open_now:,} conns"
        self.counts["connections"] = held.counts
        self.notes.append(f"gateway: {open_now:,} of {HELD_CONNECTIONS:,} connections open "
                          f"when measured, {sockets:,} sockets in the process; answers "
                          f"{dict(held.counts)}")
        if open_now < HELD_CONNECTIONS:
            console.log(f"[yellow]only {open_now} of {HELD_CONNECTIONS} connections stayed open")
        row.released = (await self.settle_and_measure(["gateway"], quiet + 3))["gateway"]

    async def in_flight(self, consumer: Consumer, publisher: KafkaEventBus, topic: str,
                        quiet: float) -> None:
        row = self.rows[CONSUMER]
        with console.status(f"loaded: {IN_FLIGHT:,} records in flight in the consumer"):
            # The baseline just before: librdkafka's fetch buffers move the consumer's RSS by
            # a few MiB between phases, as much as the records in flight themselves.
            row.before_load = (await self.settle_and_measure([CONSUMER], 1.0))[CONSUMER]
            _, handled = await consumer.status()
            await consumer.command("hold")
            await publisher.publish_many(topic, self.events(IN_FLIGHT, IN_FLIGHT))
            await consumer.wait_for("records in flight", lambda f, _h: f >= IN_FLIGHT)
            row.loaded = (await self.settle_and_measure([CONSUMER], 0))[CONSUMER]
            row.loaded_what = f"{IN_FLIGHT:,} in flight"
            await consumer.command("release")
            await consumer.wait_for("release", lambda f, h: f == 0 and h >= handled + IN_FLIGHT)
        row.released = (await self.settle_and_measure([CONSUMER], quiet))[CONSUMER]

    async def soak(self, consumer: Consumer, publisher: KafkaEventBus, topic: str,
                   urls: list[str]) -> None:
        args = self.args
        counts: Counter[int] = Counter()
        _, handled_before = await consumer.status()
        published = 0

        async def records() -> None:
            nonlocal published
            started = time.perf_counter()
            per_tick = max(1, round(args.rate / 10))
            while time.perf_counter() - started < args.soak:
                await publisher.publish_many(topic, self.events(per_tick, 1000))
                published += per_tick
                await asyncio.sleep(max(0.0, started + published / args.rate
                                        - time.perf_counter()))

        async def sample(stop: asyncio.Event) -> None:
            started = time.monotonic()
            while not stop.is_set():
                at = time.monotonic() - started
                for name in self.pids:
                    value = self.measure(name)
                    self.rows[name].samples.append((at, value.rss, value.uss))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.every)

        stop = asyncio.Event()
        with console.status(f"soak: {args.rate:g} requests/s and {args.rate:g} records/s "
                            f"for {args.soak:g} s"):
            sampler = asyncio.create_task(sample(stop))
            async with load.session(self.token, 64) as client:
                await asyncio.gather(load.steady(client, urls, args.rate, args.soak, counts),
                                     records())
            stop.set()
            await sampler
            await consumer.wait_for("soak records", lambda f, h: h >= handled_before + published)
        self.counts["soak"] = counts
        console.log(f"soak: {sum(counts.values()):,} requests, statuses {dict(counts)}; "
                    f"{published:,} records")
        for row in self.rows.values():
            kept = [s for s in row.samples if s[0] >= WARM_UP * args.soak]
            times = [s[0] for s in kept]
            row.slope = procmem.slope_per_minute(times, [float(s[1]) for s in kept])
            row.uss_slope = procmem.slope_per_minute(times, [float(s[2]) for s in kept])


def threshold(soak_seconds: float) -> float:
    """KiB/min: the slope one STEP_KIB step in the middle of the measured window gives."""
    return 1.5 * STEP_KIB / ((1 - WARM_UP) * soak_seconds / 60)


def table(bench: Bench, limit: float) -> Table:
    out = Table(title="Resident memory per process, MiB (RSS; PSS and USS at rest)",
                title_style="bold", header_style="bold")
    for column in ("process", "idle RSS", "idle PSS", "idle USS",
                   f"after {bench.args.requests:,} req", "loaded", "loaded with",
                   "after load", "soak KiB/min", "aim", "verdict"):
        out.add_column(column, justify="left" if column in ("process", "loaded with")
                       else "right", no_wrap=column in ("process", "loaded with"))
    for row in bench.rows.values():
        assert row.idle is not None and row.after is not None and row.slope is not None
        verdict = "[green]PASS" if row.slope <= limit else "[red]MISS"
        out.add_row(row.name, mib(row.idle.rss), mib(row.idle.pss), mib(row.idle.uss),
                    mib(row.after.rss), mib(row.loaded.rss) if row.loaded else "—",
                    row.loaded_what or "—", mib(row.released.rss) if row.released else "—",
                    f"{row.slope:+,.0f}", f"≤ {limit:,.0f}", verdict)
    slopes = {row.name: row.slope for row in bench.rows.values() if row.slope is not None}
    if slopes:
        worst = max(slopes, key=lambda name: slopes[name])
        aims.record("memory", f"RSS slope over the soak, each of {len(slopes)} processes",
                    measured=f"at most {slopes[worst]:+,.0f} KiB/min ({worst})",
                    aim=f"≤ {limit:,.0f} KiB/min (no growth)",
                    met=all(slope <= limit for slope in slopes.values()))
    return out


@contextlib.asynccontextmanager
async def publisher_bus(bootstrap: str) -> AsyncIterator[KafkaEventBus]:
    bus = KafkaEventBus(KafkaConfig(bootstrap_servers=bootstrap, client_id="bench-memory-pub",
                                    consumer_group="bench-memory-pub"))
    bus.events.register(BenchEvent)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()


async def login(gateway: str, email: str, password: str) -> str:
    async with aiohttp.ClientSession() as client, client.post(
            f"{gateway}/api/auth/login", json={"email": email, "password": password}) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"login through the gateway: {response.status} {body}")
        token: str = body["access_token"]
        return token


async def measure_all(args: argparse.Namespace, pids: dict[str, int], gateway: str,
                      bootstrap: str, email: str, password: str) -> Bench:
    token = await login(gateway, email, password)
    topic = f"bench-memory-{os.getpid()}"
    consumer = await Consumer.start(bootstrap, topic)
    try:
        bench = Bench(args, {**pids, CONSUMER: consumer.pid}, gateway, bootstrap, token)
        async with publisher_bus(bootstrap) as publisher:
            await bench.run(consumer, publisher, topic)
    finally:
        await consumer.stop()
    return bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000,
                        help="requests to each service (and records) in phase 2 (10,000)")
    parser.add_argument("--soak", type=float, default=300.0, help="soak seconds (300)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="requests/s (and records/s) during the soak (100)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples (5)")
    parser.add_argument("--quick", action="store_true",
                        help="500 requests, no idempotency fill, a 20 s soak sampled every second")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.soak, args.every = 500, 20.0, 1.0
    from devinfra.stack import SERVICES, Stack

    load_before = os.getloadavg()
    console.log(f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before starting")
    started = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        stack = Stack(SERVICES, state_dir=state, base_port=0,
                      env={"GATEWAY_ROUTES_FILE": str(routes_file(state)),
                           "ACCESS_TOKEN_TTL": "3600", "LOG_LEVEL": "WARNING"},
                      console=Console(quiet=True))
        with console.status("starting Kafka and the services (devinfra.stack)"):
            stack.start()
        try:
            assert stack.admin is not None, "the stack made no admin"
            pids = {name: proc.process.pid for name, proc in stack.processes.items()
                    if proc.process.pid is not None}
            bench = asyncio.run(measure_all(args, pids, stack.url("gateway"),
                                            stack.bootstrap_servers, stack.admin.email,
                                            stack.admin.password))
        finally:
            with console.status("stopping the stack"):
                stack.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)
    load_after = os.getloadavg()
    limit = threshold(args.soak)
    console.print(table(bench, limit))
    window = (1 - WARM_UP) * args.soak / 60
    per_request = limit * 1024 / (args.rate * 60)
    console.print(
        f"• idle: after start-up and {2 if args.quick else 5} s of quiet; after: "
        f"{args.requests:,} GETs to each service through the gateway "
        f"({', '.join(ROUTES.values())}), "
        f"16 at a time, and {args.requests:,} records through the consumer; loaded: the gateway "
        f"with {HELD_CONNECTIONS:,} keep-alive connections, the consumer with {IN_FLIGHT:,} "
        f"records in flight; after load: once they are closed / released.\n"
        f"• soak: {args.rate:g} requests/s and {args.rate:g} records/s for {args.soak:g} s, "
        f"RSS every {args.every:g} s; slope (least squares) over the last {window:.1f} min. "
        f"Aim: at most the slope of one 1 MiB step ({limit:,.0f} KiB/min here: about "
        f"{per_request:,.0f} bytes a request at the gateway, {per_request * len(ROUTES):,.0f} "
        f"at a service).\n"
        f"• Machine: {os.cpu_count()} CPUs, load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f}.")
    for note in bench.notes:
        console.print(f"• {note}")
    for name in ("gateway", CONSUMER):
        row = bench.rows[name]
        if row.loaded and row.before_load:
            count = HELD_CONNECTIONS if name == "gateway" else IN_FLIGHT
            console.print(f"• {name}: {(row.loaded.rss - row.before_load.rss) / count:,.1f} KiB "
                          f"RSS per {'connection' if name == 'gateway' else 'record in flight'}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_seconds": round(time.monotonic() - started, 1),
        "settings": {"requests": args.requests, "soak_seconds": args.soak, "rate": args.rate,
                     "every": args.every, "threshold_kib_per_min": limit},
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before,
                    "loadavg_after": load_after},
        "counts": {k: dict(v) for k, v in bench.counts.items()},
        "rows": [asdict(row) for row in bench.rows.values()],
        "median_idle_rss_kib": statistics.median(
            r.idle.rss for r in bench.rows.values() if r.idle is not None),
    }, indent=2) + "\n")
    console.print(f"results written to [bold]{args.output}[/]; total run time "
                  f"{time.monotonic() - started:.0f} s")
    return 0  # a MISS is a result, printed, as in the other benchmarks; errors raise


if __name__ == "__main__":
    sys.exit(main())
