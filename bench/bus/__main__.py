"""`python -m bench.bus` (`make bench`): core bus vs typed raw (confluent-kafka plus the pydantic
work per record, the floor a typed framework can reach) vs FastStream vs raw aiokafka vs raw
confluent-kafka, measured in one run on one throwaway local Kafka broker.

Its contenders are in the `bench` dependency group (`make bench` installs it):

    uv run --group bench python -m bench.bus           # 50,000 x 512 B throughput (median of
                                                       # 3 rounds), 2,000 paced for latency
    uv run --group bench python -m bench.bus --quick   # 10,000 x 512 B, 1 round, 500 paced
    uv run --group bench python -m bench.bus --messages 100000 --only core,confluent
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from bench.bus.aims import record_aims
from bench.bus.contenders import CORE, FRAMEWORK, RAW, TYPED, Contender, all_contenders
from bench.bus.report import legend, results_table, verdict_table
from bench.bus.results import ContenderRun, to_json, verdicts
from bench.bus.runner import Runner, Settings
from bench.common.kafka import BENCH_JAVA_OPTS

RESULTS_PATH = Path(".cache") / "bench-results.json"
WARMUP_MESSAGES = 5_000
STEP_TIMEOUT = 240.0
BUSY_LOAD = 0.5
"""Load average per CPU above which the machine counts as busy before the run."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=None,
                        help="records per throughput measurement (default 50,000)")
    parser.add_argument("--size", type=int, default=512, help="payload bytes (default 512)")
    parser.add_argument("--latency-messages", type=int, default=None,
                        help="paced records per latency measurement (default 2,000)")
    parser.add_argument("--interval-ms", type=float, default=2.0,
                        help="pace of the latency publisher (default one record every 2 ms)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions per topic")
    parser.add_argument("--quick", action="store_true",
                        help="10,000 throughput and 500 latency records (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved throughput rounds, median reported (default 3; "
                             "1 with --quick)")
    parser.add_argument("--only", default="",
                        help="comma-separated contenders: "
                             "core,typed,faststream,aiokafka,confluent")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH,
                        help=f"results JSON (default {RESULTS_PATH})")
    args = parser.parse_args(argv)
    args.messages = args.messages or (10_000 if args.quick else 50_000)
    args.latency_messages = args.latency_messages or (500 if args.quick else 2_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.messages < 2 or args.latency_messages < 1 or args.size < 64:
        parser.error("need --messages >= 2, --latency-messages >= 1 and --size >= 64")
    return args


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import confluent_kafka

    from devinfra.kafka_dist import kafka_version

    packages = ("confluent-kafka", "aiokafka", "faststream", "pydantic")
    return {
        "python": platform.python_version(),
        "kafka_broker": kafka_version(),
        "librdkafka": confluent_kafka.libversion()[0],
        **{name: version(name) for name in packages},
    }


def _pick(contenders: list[Contender], only: str) -> list[Contender]:
    if not only:
        return contenders
    wanted = {k.strip() for k in only.split(",") if k.strip()}
    unknown = wanted - {c.key for c in contenders}
    if unknown:
        raise SystemExit(f"unknown contenders: {', '.join(sorted(unknown))}")
    return [c for c in contenders if c.key in wanted]


async def _measure(
    console: Console, runner: Runner, run: ContenderRun, contender: Contender, kind: str,
    what: str, *, metric: str,
) -> Any:
    """One measurement under a status line; a failure is recorded, never fatal for the
    others (a contender that failed once shows no value for that metric)."""
    work: Callable[..., Awaitable[Any]] = getattr(runner, kind)
    try:
        with console.status(f"[bold]{kind}: {contender.label}[/], {what} …"):
            return await asyncio.wait_for(work(contender, metric=metric), STEP_TIMEOUT)
    except Exception as exc:
        run.errors[kind] = repr(exc)
        console.log(f"[red]{kind} {contender.label} failed: {exc!r}")
        return None


async def bench(console: Console, settings: Settings, only: str, rounds: int,
                loads: list[float]) -> dict[str, ContenderRun]:
    """Every contender once per measurement per round, interleaved; `loads` gets the 1-minute
    load average at the start of each round."""
    runner = Runner(settings)
    contenders = _pick(all_contenders(settings.bootstrap_servers, settings.payload_size), only)
    runs = {c.key: ContenderRun(c.key, c.label, c.notes) for c in contenders}
    n, size = settings.messages, settings.payload_size

    warm = min(WARMUP_MESSAGES, n)
    for c in contenders:
        # Warms the broker's JIT and each client's code paths; not measured.
        with console.status(f"[bold]warm-up: {c.label}[/] publishes {warm:,} …"):
            await asyncio.wait_for(runner.publish(c, count=warm, metric="warmup"),
                                   STEP_TIMEOUT)
    console.log(f"warm-up done ({warm:,} records per contender, not measured)")

    for i in range(1, rounds + 1):
        tag = f"round {i}/{rounds}"
        # Each round starts with a different contender, so none always runs first (on a
        # fresh topic, right after the warm-up) or last.
        shift = (i - 1) % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        load = os.getloadavg()[0]
        loads.append(load)
        console.log(f"{tag}: load average {load:.2f}; order "
                    f"{', '.join(c.label for c in order)}")
        for c in order:
            p = await _measure(console, runner, runs[c.key], c, "publish",
                               f"{tag}: {n:,} x {size} B, acks=all", metric=f"publish{i}")
            if p is not None:
                runs[c.key].publish.append(p)
                console.log(f"{tag} publish  {c.label:<11} {p.rate:>9,.0f} msg/s "
                            f"({p.seconds:.2f}s)")
        for c in order:
            r = await _measure(console, runner, runs[c.key], c, "consume",
                               f"{tag}: pre-produce, then consume {n:,}", metric=f"consume{i}")
            if r is not None:
                runs[c.key].consume.append(r)
                console.log(f"{tag} consume  {c.label:<11} {r.rate:>9,.0f} msg/s "
                            f"({r.seconds:.2f}s; first record {r.join_seconds:.1f}s after "
                            f"start)")
        for c in order:
            lat = await _measure(console, runner, runs[c.key], c, "latency",
                                 f"{tag}: {settings.latency_messages:,} records, one every "
                                 f"{settings.interval_ms:g} ms", metric=f"latency{i}")
            if lat is not None:
                runs[c.key].latency.append(lat)
                s = lat.summary
                console.log(f"{tag} latency  {c.label:<11} p50 {s.p50_ms:6.2f} ms  "
                            f"p99 {s.p99_ms:6.2f} ms  max {s.max_ms:6.2f} ms  "
                            f"(paced {lat.achieved_rate:,.0f}/s, lost {lat.lost})")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 110)
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    os.environ.setdefault("KFM_KAFKA_JAVA_OPTS", BENCH_JAVA_OPTS)
    from devinfra.kafka import KafkaBroker

    started = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    load_before = os.getloadavg()
    cpus = os.cpu_count() or 1
    console.log(f"{cpus} CPUs, load average {load_before[0]:.2f} / {load_before[1]:.2f} "
                f"(1 / 5 min) before starting")
    if load_before[0] > BUSY_LOAD * cpus:
        console.log("[yellow]the machine is already busy: other processes compete with the "
                    "broker and the clients, expect noisy numbers")
    with console.status("[bold]starting a local Kafka broker[/] …"):
        broker = KafkaBroker.start()
    with broker:
        console.log(f"broker ready at {broker.bootstrap_servers} "
                    f"in {broker.startup_seconds or 0:.1f}s")
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers, messages=args.messages,
            payload_size=args.size, latency_messages=args.latency_messages,
            latency_warmup=max(10, args.latency_messages // 10), interval_ms=args.interval_ms,
            partitions=args.partitions, run_id=run_id,
        )
        round_loads: list[float] = []
        runs = asyncio.run(bench(console, settings, args.only, args.rounds, round_loads))
        with console.status("[bold]stopping the broker[/] …"):
            broker.stop()
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()

    others = [k for k in (TYPED, FRAMEWORK, *RAW) if k in runs]
    found = verdicts(runs, CORE, FRAMEWORK, RAW, TYPED)
    console.print()
    if CORE in runs:
        console.print(results_table(runs, CORE, others))
        console.print(verdict_table(found))
    for aim in record_aims(runs):
        console.print(f"• issue 24 aim, {aim.name}: {aim.verdict} {aim.measured} (aim {aim.aim})")
    legend(console, runs, settings, args.rounds)
    if any(v.status == "N/A" for v in found):
        console.print("• N/A: a contender the target compares against was not measured "
                      "(--only) or failed.")
    console.print(f"• Machine: {cpus} CPUs; load average before the run {load_before[0]:.2f}, "
                  f"after {load_after[0]:.2f} (the bench itself adds about 2).")

    meta = {
        "run_id": run_id,
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_seconds": round(elapsed, 1),
        "settings": {
            "messages": settings.messages, "payload_size": settings.payload_size,
            "latency_messages": settings.latency_messages,
            "latency_warmup": settings.latency_warmup, "interval_ms": settings.interval_ms,
            "partitions": settings.partitions, "rounds": args.rounds,
        },
        "machine": {
            "cpus": cpus, "platform": platform.platform(),
            "loadavg_before": load_before, "loadavg_after": load_after,
            "loadavg_rounds": round_loads,
        },
        "broker_java_opts": os.environ.get("KFM_KAFKA_JAVA_OPTS", ""),
        "versions": _versions(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(to_json(runs, found, meta), indent=2) + "\n")
    console.print(f"\nresults written to [bold]{args.output}[/]; "
                  f"total run time {elapsed:.0f}s")
    return 1 if any(run.errors for run in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
