"""`python -m bench.login`: logins per second against the real auth service process.

The auth service runs as it is deployed (`python -m services.auth`: uvicorn, its own process)
on SQLite, beside a real Kafka broker, with its default Argon2id parameters. Callers log in
concurrently for `--seconds` per round; each login is one Argon2 verify plus a refresh-token
insert and two token signatures. Beside it, in the same run on the same machine, the bare
`PasswordHasher.verify` rate with the same parameters, from as many threads as the service
hashes at once: the ceiling any login endpoint with these parameters can reach. The ratio
says how Argon2-bound the endpoint is (close to 100 %: the hash is the cost, as designed).

SQLite is the embedded default and fine here: a login writes one small row, and the hash,
not the database, is the bottleneck (the ratio shows it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher
from rich.console import Console
from rich.table import Table

from bench.common.paths import ROOT
from bench.common.stats import percentile
from devinfra.process import free_port
from services.auth.config import AuthSettings

console = Console(width=120)
EMAIL, PASSWORD = "bench@example.com", "Bench-password-1"


def raw_verify_rate(hasher: PasswordHasher, threads: int, seconds: float) -> float:
    """Verifies per second of the bare hasher from `threads` threads (argon2-cffi releases the
    GIL, so threads run in parallel up to the cores)."""
    stored = hasher.hash(PASSWORD)
    stop_at = time.perf_counter() + seconds

    def work() -> int:
        done = 0
        while time.perf_counter() < stop_at:
            hasher.verify(stored, PASSWORD)
            done += 1
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda _: work(), range(threads)))
    return total / (time.perf_counter() - started)


async def login_round(url: str, callers: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 limits=httpx.Limits(max_connections=callers)) as http:
        stop_at = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal failures
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                answer = await http.post("/auth/login",
                                         json={"email": EMAIL, "password": PASSWORD})
                if answer.status_code != 200:
                    failures += 1
                latencies.append((time.perf_counter() - started) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.perf_counter() - began
    return {"rate": len(latencies) / elapsed, "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99), "failures": failures}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.common.kafka import BENCH_JAVA_OPTS
    from devinfra.kafka import KafkaBroker

    os.environ.setdefault("KFM_KAFKA_JAVA_OPTS", BENCH_JAVA_OPTS)

    cfg = AuthSettings(_env_file=None)
    hasher = PasswordHasher(time_cost=cfg.argon2_time_cost, memory_cost=cfg.argon2_memory_kib,
                            parallelism=cfg.argon2_parallelism)
    params = (f"Argon2id t={hasher.time_cost} m={hasher.memory_cost} KiB "
              f"p={hasher.parallelism}; {cfg.password_hash_concurrency} hashes at once")
    console.print(f"password hashing: {params}")
    with console.status("starting Kafka..."):
        broker = await asyncio.to_thread(KafkaBroker.start)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = (Path(tmp) / "auth.log").open("w")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SERVICE_PORT": str(port),
               "DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/auth.db",
               "JWT_KEYS_DIR": f"{tmp}/keys", "REGISTRY_BACKEND": "static",
               "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "LOG_LEVEL": "WARNING"}
        service = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.auth", cwd=ROOT, env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            await _wait_until_up(url, service)
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                made = await http.post("/auth/register",
                                       json={"email": EMAIL, "password": PASSWORD})
                assert made.status_code == 201, made.text
            rounds = []
            for n in range(args.rounds):
                with console.status(f"round {n + 1}/{args.rounds}: logins, then raw verify"):
                    endpoint = await login_round(url, args.concurrency, args.seconds)
                    raw = await asyncio.to_thread(raw_verify_rate, hasher,
                                                  cfg.password_hash_concurrency, args.seconds)
                rounds.append({**endpoint, "raw_verify_rate": raw})
        finally:
            service.terminate()
            await asyncio.wait_for(service.wait(), 20)
            log.close()
            await asyncio.to_thread(broker.close)
    return {"argon2": {"time_cost": hasher.time_cost, "memory_kib": hasher.memory_cost,
                       "parallelism": hasher.parallelism,
                       "concurrency": cfg.password_hash_concurrency},
            "concurrency": args.concurrency, "seconds": args.seconds, "rounds": rounds,
            "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}


async def _wait_until_up(url: str, service: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient(base_url=url) as http:
        while True:
            if service.returncode is not None:
                raise SystemExit(f"the auth service exited with {service.returncode}")
            try:
                if (await http.get("/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the auth service did not start in 90 s")
            await asyncio.sleep(0.2)


def report(result: dict[str, Any]) -> None:
    rounds = result["rounds"]

    def median(key: str) -> float:
        return float(statistics.median(r[key] for r in rounds))

    table = Table(title=f"POST /auth/login, {result['concurrency']} callers, median of "
                        f"{len(rounds)} rounds of {result['seconds']:g} s")
    for column in ("measure", "per second", "p50 ms", "p99 ms", "of raw verify"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    raw, rate = median("raw_verify_rate"), median("rate")
    table.add_row("login endpoint (auth process, SQLite)", f"{rate:,.1f}",
                  f"{median('p50_ms'):.1f}", f"{median('p99_ms'):.1f}", f"{rate / raw:.0%}")
    table.add_row(f"raw PasswordHasher.verify ({result['argon2']['concurrency']} threads)",
                  f"{raw:,.1f}", "", "", "100%")
    console.print(table)
    failures = sum(r["failures"] for r in rounds)
    console.print(f"failed logins: {failures}; load average after the run "
                  f"{result['load_average']:.2f} on {result['cpus']} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.login", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
