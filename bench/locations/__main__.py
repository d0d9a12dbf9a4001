"""`python -m bench.locations`: driver location updates into the read model, in one run.

Starts one Kafka broker, PostgreSQL, a token issuer and the driver service as its own process
(once on SQLite, once on PostgreSQL), with `--drivers` available drivers written straight to
its database, then measures:

- HTTP updates/s: `--concurrency` clients sending `PUT /drivers/{id}/location` for
  `--seconds` (each answer means the row is committed and the report acknowledged by Kafka);
- Kafka updates/s: `--reports` reports published straight to `driver.locations` (as devices
  would), from the first publish until the read model holds the last of them;
- p50/p99 from an update to the driver being visible in `GET /drivers/nearby` (polled as
  fast as it answers), over `--probes` sequential updates per path.

    uv run python -m bench.locations
    uv run python -m bench.locations --seconds 3 --reports 5000 --probes 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from bench.common.kafka import BENCH_JAVA_OPTS
from bench.common.paths import ROOT
from bench.common.stats import percentile
from core.config import KafkaConfig
from core.db.engine import Database
from core.messaging.event_bus import KafkaEventBus
from devinfra.process import free_port
from services.driver.events import (
    LOCATIONS_TOPIC,
    DriverLocationReported,
    LocationReportedData,
    driver_events,
)
from services.driver.models import Driver, DriverLocation

console = Console(width=120)
ISSUER, AUDIENCE = "https://auth.bench", "platform"
CITY = (52.52, 13.405)


def launch(module: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", module, str(port)], cwd=ROOT,
                            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_ok(http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes],
                  timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout:g}s")


async def seed(database_url: str, count: int) -> list[str]:
    """`count` available drivers, written straight to the service's database."""
    database = Database(database_url)
    try:
        async with database.transaction() as session:
            drivers = [Driver(user_id=str(uuid.uuid4()), licence_number=f"B-{n:08d}",
                              licence_expiry=date(2035, 1, 1), vehicle_make="Kia",
                              vehicle_model="Niro", vehicle_plate=f"B {n}",
                              vehicle_colour="grey", vehicle_year=2022, status="available")
                       for n in range(count)]
            session.add_all(drivers)
        return [str(d.id) for d in drivers]
    finally:
        await database.dispose()


def report(driver_id: str, lat: float, lon: float, at: datetime) -> DriverLocationReported:
    return DriverLocationReported(aggregate_id=driver_id, data=LocationReportedData(
        driver_id=driver_id, lat=lat, lon=lon, recorded_at=at))


async def http_rate(http: aiohttp.ClientSession, base: str, drivers: list[str],
                    concurrency: int, seconds: float) -> tuple[float, int]:
    done, errors = 0, 0
    stop = time.monotonic() + seconds
    rng = random.Random(1)

    async def worker() -> None:
        nonlocal done, errors
        while time.monotonic() < stop:
            body = {"lat": CITY[0] + rng.uniform(-0.1, 0.1),
                    "lon": CITY[1] + rng.uniform(-0.1, 0.1)}
            async with http.put(f"{base}/drivers/{rng.choice(drivers)}/location",
                                json=body) as response:
                await response.read()
                if response.status == 200:
                    done += 1
                else:
                    errors += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.monotonic() - started), errors


async def kafka_rate(bus: KafkaEventBus, database_url: str, drivers: list[str],
                     reports: int) -> float:
    base = datetime.now(UTC) + timedelta(seconds=1)
    rng = random.Random(2)
    events = [report(drivers[i % len(drivers)], CITY[0] + rng.uniform(-0.1, 0.1),
                     CITY[1] + rng.uniform(-0.1, 0.1), base + timedelta(microseconds=i))
              for i in range(reports)]
    threshold = base + timedelta(microseconds=reports - len(drivers))
    database = Database(database_url)
    started = time.monotonic()
    try:
        for n in range(0, reports, 1000):
            await bus.publish_many(LOCATIONS_TOPIC, events[n:n + 1000])
        while True:
            async with database.session() as session:
                latest = await session.scalar(select(func.count()).select_from(DriverLocation)
                                              .where(DriverLocation.recorded_at >= threshold))
            if latest == len(drivers):
                return reports / (time.monotonic() - started)
            await asyncio.sleep(0.05)
    finally:
        await database.dispose()


async def visible_after(http: aiohttp.ClientSession, base: str, driver_id: str,
                        send: Callable[[float, float], Awaitable[None]], spot: float) -> float:
    """Seconds from sending an update to seeing it in the nearby query."""
    lat, lon = -60.0 + spot * 0.01, 100.0
    started = time.monotonic()
    await send(lat, lon)
    params = {"lat": str(lat), "lon": str(lon), "radius_km": "0.05"}
    while True:
        async with http.get(f"{base}/drivers/nearby", params=params) as response:
            items = (await response.json())["items"]
        if any(i["driver_id"] == driver_id for i in items):
            return time.monotonic() - started
        if time.monotonic() - started > 30:
            raise TimeoutError("the update never showed")


async def latencies(http: aiohttp.ClientSession, base: str, bus: KafkaEventBus, probe: str,
                    probes: int) -> dict[str, list[float]]:
    async def by_http(lat: float, lon: float) -> None:
        async with http.put(f"{base}/drivers/{probe}/location",
                            json={"lat": lat, "lon": lon}) as response:
            assert response.status == 200, await response.text()

    async def by_kafka(lat: float, lon: float) -> None:
        await bus.publish(LOCATIONS_TOPIC, report(probe, lat, lon, datetime.now(UTC)))

    found: dict[str, list[float]] = {"http": [], "kafka": []}
    for n in range(probes):
        found["http"].append(await visible_after(http, base, probe, by_http, 2 * n))
        found["kafka"].append(await visible_after(http, base, probe, by_kafka, 2 * n + 1))
    return found


async def measure(backend: str, database_url: str, kafka: KafkaConfig, jwks: str, token: str,
                  args: argparse.Namespace) -> dict[str, dict[str, float]]:
    port = free_port()
    proc = launch("services.driver", port, {
        "SERVICE_PORT": str(port), "ENVIRONMENT": "development", "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_CONSUMER_GROUP": f"bench-driver-{backend}-{uuid.uuid4().hex[:6]}",
        "KAFKA_AUTO_OFFSET_RESET": "latest", "JWKS_URL": jwks, "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE, "REGISTRY_BACKEND": "static", "REGISTRY_STATIC": "",
        "LOG_LEVEL": "WARNING"})
    base = f"http://127.0.0.1:{port}"
    bus = KafkaEventBus(kafka, driver_events())
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
            await wait_ok(http, f"{base}/health/ready", proc)
            drivers = await seed(database_url, args.drivers + 1)
            probe, drivers = drivers[0], drivers[1:]
            await bus.producer.start()
            http_per_s, errors = await http_rate(http, base, drivers, args.concurrency,
                                                 args.seconds)
            kafka_per_s = await kafka_rate(bus, database_url, drivers, args.reports)
            seen = await latencies(http, base, bus, probe, args.probes)
    finally:
        await bus.stop()
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
    return {path: {"updates_per_s": rate, "p50_ms": percentile(seen[path], 50) * 1000,
                   "p99_ms": percentile(seen[path], 99) * 1000,
                   **({"errors": errors} if path == "http" else {})}
            for path, rate in (("http", http_per_s), ("kafka", kafka_per_s))}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from devinfra.kafka import KafkaBroker
    from devinfra.postgres import PostgresServer

    os.environ.setdefault("KFM_KAFKA_JAVA_OPTS", BENCH_JAVA_OPTS)
    with console.status("starting Kafka, PostgreSQL and a token issuer..."):
        broker = await asyncio.to_thread(KafkaBroker.start)
        pg = await asyncio.to_thread(PostgresServer.start)
    tmp = tempfile.TemporaryDirectory()
    issuer_port = free_port()
    issuer = launch("tests.integration.procs.jwt_issuer", issuer_port, {
        "KEYS_DIR": str(Path(tmp.name) / "keys"), "ISSUER": ISSUER, "AUDIENCE": AUDIENCE,
        "CLIENT_ID": "bench", "CLIENT_SECRET": "bench", "TOKEN_TTL": "3600"})
    issuer_url = f"http://127.0.0.1:{issuer_port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ok(http, f"{issuer_url}/stats", issuer)
            async with http.post(f"{issuer_url}/issue", json={
                    "sub": "bench-admin", "ttl": 3600,
                    "permissions": ["drivers:read", "drivers:write"]}) as response:
                token = (await response.json())["token"]
        kafka = KafkaConfig(broker.bootstrap_servers, "bench-locations", "bench-locations")
        results: dict[str, Any] = {}
        for backend, url in (("sqlite", f"sqlite+aiosqlite:///{Path(tmp.name) / 'driver.db'}"),
                             ("postgres", pg.url)):
            with console.status(f"measuring on {backend}..."):
                results[backend] = await measure(backend, url, kafka,
                                                 f"{issuer_url}/.well-known/jwks.json", token,
                                                 args)
        return results
    finally:
        issuer.kill()
        issuer.wait()
        tmp.cleanup()
        await asyncio.to_thread(pg.close)
        await asyncio.to_thread(broker.close)


def show(results: dict[str, Any], args: argparse.Namespace) -> None:
    table = Table(title=f"Driver locations into the read model: {args.drivers} drivers, HTTP "
                        f"{args.concurrency} clients x {args.seconds:g}s, Kafka {args.reports:,} "
                        f"reports, {args.probes} latency probes per path")
    for column in ("database", "path", "updates/s ↑", "visible p50 ms ↓", "visible p99 ms ↓"):
        table.add_column(column, justify="right", no_wrap=True)
    for backend, paths in results.items():
        for path, r in paths.items():
            table.add_row(backend, path, f"{r['updates_per_s']:,.0f}", f"{r['p50_ms']:.1f}",
                          f"{r['p99_ms']:.1f}")
    console.print(table)
    console.print(f"load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} "
                  "CPUs; one round, expect ±20% on a busy machine. Visible: from sending the "
                  "update to the first nearby answer that shows it.")
    print(json.dumps({"bench": "locations", "args": vars(args), "results": results}))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.locations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drivers", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--probes", type=int, default=100)
    args = parser.parse_args()
    show(asyncio.run(run(args)), args)


if __name__ == "__main__":
    main()
