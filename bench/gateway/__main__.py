"""`python -m bench.gateway` (part of `make bench`): the gateway against calling the upstream
directly and against nginx as a plain reverse proxy, with the same load generator (wrk), in
one run; and, with `--choice`, the server and upstream client the gateway is built on.

Every contender is a real process in front of one upstream (a raw ASGI app under uvicorn,
1 worker) and answers `GET /api/ping` (332 bytes of JSON) with the same bearer token on every
request. Each round measures each contender twice with wrk, in rounds that interleave the
contenders (rotating who goes first); the tables show the medians over rounds:

- under load: `--connections` connections for 70 % of `--duration`: requests/s, and latency
  p50/p99 (which, at saturation, is mostly queueing: connections / rate);
- one at a time: 1 connection for the rest: the latency a proxy adds to a request that does
  not wait behind others, which is what "added p50 under 1 ms" is about.

Contenders (default):        direct (wrk → upstream), nginx (worker_processes 1, keep-alive
                             pool of 64), the gateway with its in-process rate limiter, the
                             gateway with the Redis-shared limiter (a throwaway Redis), and
                             the gateway on aiohttp's client instead of its own (the baseline
                             of `core.http.h1_transport`);
                             the gateway verifies the token, checks the route's permission
                             and counts the request against a limit it never reaches.
Contenders (--choice):       direct, and a minimal reverse proxy (bench/gateway/standin.py)
                             under uvicorn (uvloop, httptools) and granian (ASGI, uvloop),
                             1 and 2 workers, with aiohttp and httpx as the upstream client.

Until `gateway.app` imports, the gateway's place is taken by the stand-in proxy (marked).

The choice, as measured on the 2-CPU development machine (load average about 3 from other
work; medians of 3 rounds): aiohttp as the upstream client, by far (httpx's pool costs 4 to
16 ms of CPU per request at 64 connections and adds 2 to 3 ms to a lone request; aiohttp about
0.4 ms of CPU and 0.5 ms); uvicorn with uvloop and httptools as the server (the same
requests/s and CPU per request as granian at 2 workers, within the noise, but 0.2 to 0.3 ms
less added to a lone request and a lower p99); and 2 workers (+15 % requests/s for the bare
proxy, +40 to 60 % for the gateway, whose work per request is twice the proxy's). Run
`--choice` again when either library changes. The gateway itself then moved from aiohttp to
its own client (`core.http.h1_transport`), measured here against aiohttp in every default run
("gateway (aiohttp)"): in one run at load 0.4, 3,171 against 2,201 requests/s, 428 against
633 µs of CPU per request, and +0.52 against +1.26 ms added to a lone request.

    uv run python -m bench.gateway                          # 3 rounds of 10 s per contender
    uv run --group bench python -m bench.gateway --choice   # 3 rounds of 6 s (granian too)
    uv run python -m bench.gateway --duration 2 --rounds 1  # a smoke run
    uv run python -m bench.gateway --profile --duration 5   # where the gateway's CPU goes
    uv run python -m bench.gateway --baseline ../main --no-variants  # this code vs main's
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from bench.common import aims as bench_aims
from bench.gateway import procs
from bench.gateway.report import (
    NGINX,
    Aim,
    Sample,
    aims,
    aims_table,
    cpu_note,
    median,
    print_tables,
)
from bench.gateway.wrk import Load, WrkError, run_wrk, write_script
from devinfra.process import DevInfraError

console = Console(width=None if sys.stdout.isatty() else 120)
BUSY_LOAD = 0.5
CHOICE = [(server, workers, client) for client in ("aiohttp", "httpx")
          for server in ("uvicorn", "granian") for workers in (1, 2)]
GATEWAY_SERVER, GATEWAY_CLIENT = "uvicorn", "aiohttp"
"""What the stand-in runs with when it takes the gateway's place (the --choice winner)."""


@contextlib.contextmanager
def contenders(args: argparse.Namespace, workdir: Path,
               credentials: procs.Credentials) -> Iterator[list[procs.Running]]:
    """Start the upstream and every contender (all stay up for the whole run; an idle one
    costs nothing), yield them with `direct` first, stop them all."""
    started: list[procs.Running] = []
    redis = None
    try:
        direct = procs.start_upstream(workdir, credentials)
        started.append(direct)
        base = direct.url.removesuffix(procs.PATH)
        port = int(base.rsplit(":", 1)[1])
        if args.choice:
            for server, workers, client in CHOICE:
                key = f"{server}-{workers}-{client}"
                started.append(procs.start_standin(workdir, key, server, workers, client, base))
        else:
            started.append(procs.start_nginx(workdir, port))
            missing = procs.gateway_missing()
            if missing is None:
                from devinfra.redis import RedisServer

                redis = RedisServer.start(workdir / "redis")
                started.append(procs.start_gateway(workdir, "gateway", args.workers, base, None))
                if args.baseline is not None:
                    started.append(procs.start_gateway(workdir, "gateway-baseline",
                                                       args.workers, base, None,
                                                       root=args.baseline))
                if not args.no_variants:
                    started.append(procs.start_gateway(workdir, "gateway-redis", args.workers,
                                                       base, redis.url))
                    started.append(procs.start_gateway(workdir, "gateway-aiohttp",
                                                       args.workers, base, None,
                                                       client="aiohttp"))
            else:
                console.print(f"[yellow]{missing}: the stand-in proxy (no auth, no rate "
                              "limit) takes the gateway's place")
                standin = procs.start_standin(workdir, "gateway", GATEWAY_SERVER, args.workers,
                                              GATEWAY_CLIENT, base)
                standin.label = f"stand-in {standin.label}"
                started.append(standin)
        for running in started[1:]:
            with console.status(f"waiting for {running.label}"):
                procs.wait_ready(running, credentials.headers)
        yield started
    finally:
        for running in reversed(started):
            running.stop()
        if redis is not None:
            redis.close()


def measure(running: list[procs.Running], args: argparse.Namespace, script: Path,
            headers: dict[str, str]) -> dict[str, list[Sample]]:
    """Every contender, every round: under load, then one at a time, each after the
    processes are idle again; the order rotates each round so drift hits everyone alike."""
    loaded_seconds = max(1, round(args.duration * 0.7))
    single_seconds = max(1, args.duration - loaded_seconds)
    loaded = Load(args.connections, args.threads, loaded_seconds)
    single = Load(1, 1, single_seconds)
    upstream = _pids(running[0])
    everyone = [pid for contender in running for pid in _pids(contender)]
    with console.status("warming up: 1 s of load on each contender"):
        for contender in running:
            run_wrk(contender.url, Load(args.connections, args.threads, 1), script, headers)
    samples: dict[str, list[Sample]] = {c.key: [] for c in running}
    for n in range(args.rounds):
        order = running[n % len(running):] + running[:n % len(running)]
        for contender in order:
            own = _pids(contender)
            with console.status(f"round {n + 1}/{args.rounds}: {contender.label}"):
                procs.settle(everyone)
                cpu_before = procs.cpu_seconds(own), procs.cpu_seconds(upstream)
                under_load = run_wrk(contender.url, loaded, script, headers)
                cpu_after = procs.cpu_seconds(own), procs.cpu_seconds(upstream)
                procs.settle(everyone)
                one = run_wrk(contender.url, single, script, headers)
            proxy_cpu = 0.0 if contender is running[0] else cpu_after[0] - cpu_before[0]
            samples[contender.key].append(Sample(
                under_load, one, proxy_cpu_us=1e6 * proxy_cpu / under_load.requests,
                upstream_cpu_us=1e6 * (cpu_after[1] - cpu_before[1]) / under_load.requests))
    return samples


def _pids(contender: procs.Running) -> list[int]:
    return [p.pid for p in contender.processes if p.pid is not None]


def run(args: argparse.Namespace) -> int:
    cpus = os.cpu_count() or 1
    load_before = os.getloadavg()
    console.log(f"{cpus} CPUs, load average {load_before[0]:.2f} / {load_before[1]:.2f} "
                "(1 / 5 min) before starting")
    if load_before[0] > BUSY_LOAD * cpus:
        console.log("[yellow]the machine is already busy: other processes compete with wrk, "
                    "the proxies and the upstream; expect noisy numbers")
    started = time.monotonic()
    credentials = procs.Credentials.make()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        workdir = Path(tmp)
        script = write_script(workdir)
        try:
            with contenders(args, workdir, credentials) as running:
                samples = measure(running, args, script, credentials.headers)
                failed = [c for c in running
                          if any(s.loaded.errors or s.single.errors for s in samples[c.key])]
                for contender in failed:  # their logs go with the temp dir: show them now
                    for process in contender.processes:
                        console.print(f"[dim]{process.log_tail(15)}")
        except (WrkError, DevInfraError) as exc:
            console.print(f"[red]{exc}")
            return 1
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()
    labels = {c.key: c.label for c in running}
    notes = {c.key: c.notes for c in running}
    print_tables(console, samples, labels, args)
    found = [] if args.choice else aims(samples, labels)
    if found:
        console.print(aims_table(found))
        record_aims(found, samples, labels, (load_before[0], load_after[0]))
    console.print(cpu_note(args, cpus, load_before[0], load_after[0]))
    for key, note in notes.items():
        console.print(f"[dim]• {labels[key]}: {note}")
    result = {
        "bench": "gateway-choice" if args.choice else "gateway",
        "finished_at": datetime.now(UTC).isoformat(), "duration_seconds": round(elapsed, 1),
        "settings": {"rounds": args.rounds, "duration": args.duration,
                     "connections": args.connections, "threads": args.threads,
                     "gateway_workers": args.workers, "nginx_workers": procs.NGINX_WORKERS},
        "machine": {"cpus": cpus, "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "contenders": {key: {"label": labels[key], "notes": notes[key],
                             "rounds": [s.as_json() for s in rounds]}
                       for key, rounds in samples.items()},
        "aims": [a.as_json() for a in found],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"\nresults written to [bold]{args.json}[/]; total run time {elapsed:.0f}s")
    if failed:
        console.print(f"[red]requests failed (see the errors column): "
                      f"{', '.join(c.label for c in failed)}")
    return 1 if failed else 0


def record_aims(found: list[Aim], samples: dict[str, list[Sample]], labels: dict[str, str],
                load: tuple[float, float]) -> None:
    """Issue 24's verdicts for `make bench`'s table: the gateway as shipped (in-process
    limiter, its own client), against nginx and direct measured in the same run."""
    if "gateway" not in samples or NGINX not in samples:
        return
    rate = median(samples, "gateway", lambda s: s.loaded.rate)
    nginx = median(samples, NGINX, lambda s: s.loaded.rate)
    nginx_cpu = median(samples, NGINX, lambda s: s.proxy_cpu_us)
    when = f"load {load[0]:.1f}-{load[1]:.1f}"
    for aim in found:
        if aim.contender != labels["gateway"] or aim.required is None or aim.passed is None:
            continue
        if aim.unit == "x":
            value = f"{aim.value:.2f}x of nginx ({rate:,.0f} vs {nginx:,.0f} req/s)"
        elif aim.unit == "µs":
            value = f"{aim.value:.0f} µs (nginx {nginx_cpu:.0f} µs)"
        else:
            value = f"{aim.value:+.3f} ms"
        bench_aims.record("gateway", aim.measure, measured=f"{value}, {when}",
                          aim=aim.required, met=aim.passed)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--choice", action="store_true",
                        help="measure the server and client choice instead")
    parser.add_argument("--profile", action="store_true",
                        help="profile one gateway process (1 worker, cProfile) under wrk's "
                             "load for --duration seconds and print where its time goes")
    parser.add_argument("--top", type=int, default=30, help="entries --profile prints")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=None,
                        help="whole seconds per contender per round, both phases "
                             "(default 10; 6 with --choice)")
    parser.add_argument("--connections", type=int, default=64,
                        help="wrk connections under load (default 64)")
    parser.add_argument("--threads", type=int, default=1,
                        help="wrk threads under load (default 1: wrk needs less than a core "
                             "here, and every core it does not take is the proxies')")
    parser.add_argument("--workers", type=int, default=2, help="GATEWAY_WORKERS (default 2)")
    parser.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                        help="also run the gateway of another checkout (with its own .venv), "
                             "e.g. a worktree of main, interleaved with this one's")
    parser.add_argument("--no-variants", action="store_true",
                        help="leave out the gateway+redis and gateway (aiohttp) contenders")
    parser.add_argument("--json", type=Path, default=None,
                        help="where the results go (default .cache/bench-gateway[-choice].json)")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 6 if args.choice else 10
    if args.duration < 2 or args.rounds < 1:
        parser.error("--duration must be at least 2 (two phases of whole seconds), "
                     "--rounds at least 1")
    if args.json is None:
        args.json = Path(".cache") / ("bench-gateway-choice.json" if args.choice
                                      else "bench-gateway.json")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile:
        from bench.gateway import profile

        return profile.run(args, console)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

