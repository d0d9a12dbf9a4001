"""`python -m bench.crud`: the user service's profile endpoints against a bare FastAPI app
doing the same database work, same database, same server (uvicorn, one worker), same client,
measured in one run:

- service: `services.user` as it runs (JWT check, BaseService, the outbox and its relay to a
  local Kafka broker, the in-process profile cache), GET and PATCH /users/{id} with a token;
- service, no cache: the same with a profile cache TTL of a microsecond, so every GET reads the
  database as the bare app does;
- bare: FastAPI and SQLAlchemy Core on the service's tables, no `core`, no token: GET selects
  the profile row; PATCH selects it, updates it and inserts its outbox row in one transaction
  (a create in the service's sense: a state row and an outbox event). Its rows are inserted
  as already published, so the service's relay, running beside it, leaves them alone: the
  relay's publishing and marking are the service's cost, not the bare app's.

With `--postgres`, a `BaseRouter` create (a state row and an outbox event) and read against
a bare FastAPI app on raw asyncpg doing the same work (see `bench.crud.widgets`), same server,
same load, medians of interleaved rounds.

The load is wrk (`bench.crud.load`: a Lua script per endpoint), `--concurrency` connections
on `--threads` threads for `--seconds` per endpoint, so the client does not cap the servers
(one Python client process capped every contender near 250 req/s). Each PATCH changes the
name, so each one is a write and an event. Requests go to random profiles among `--profiles`
(or that many widgets, created first). The servers run side by side on one database;
`--rounds` rounds rotate which goes first, and the table shows medians.

The aims of issue 24 (BaseRouter read ≥ 0.6x, create ≥ 0.5x of the bare asyncpg app) are
judged by requests/s under wrk and recorded with `bench.common.aims`; the server's CPU time
per request is printed beside them.

    uv run python -m bench.crud                      # SQLite file
    uv run python -m bench.crud --postgres --json .cache/bench-crud.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jwt
from rich.console import Console
from rich.table import Table

from bench.common import aims
from bench.crud.load import Endpoint, Result, measure
from bench.gateway.wrk import Load
from core.security import ACCESS_TOKEN_TYPE
from devinfra.process import free_port, port_accepts

console = Console(width=120)
ISSUER, AUDIENCE, KID = "https://auth.bench", "platform", "bench-key"
CONTENDERS = ("service", "service, no cache", "bare")
BASELINE = "bare"


# --- the servers (each in its own process) --------------------------------------------------


def serve_service(port: int, database_url: str, kafka: str, cache_ttl: float) -> None:
    import uvicorn

    from core.security import Security, StaticKeySource, TokenVerifier
    from core.security.keys import SigningKey
    from core.security.keystore import StoredKey
    from services.user.config import UserSettings
    from services.user.main import create_app

    key = SigningKey.from_stored(StoredKey(KID, "EdDSA", os.environb[b"BENCH_KEY"], 0.0))
    verifier = TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                             audience=AUDIENCE)
    settings = UserSettings(
        database_url=database_url, kafka_bootstrap_servers=kafka, profile_cache_ttl=cache_ttl,
        kafka_consumer_group=f"bench-{uuid.uuid4().hex[:8]}", registry_backend="static",
        service_port=port)
    uvicorn.run(create_app(settings, security=Security(verifier)), host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


def serve_widgets(port: int, kind: str, database_url: str) -> None:
    import uvicorn

    from bench.crud import widgets as crud_widgets

    app = (crud_widgets.router_app(database_url) if kind == "widgets"
           else crud_widgets.bare_app(database_url))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_bare(port: int, database_url: str) -> None:
    import uvicorn

    uvicorn.run(bare_app(database_url), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


def bare_app(database_url: str) -> Any:
    """The same reads and writes as the service, written directly: FastAPI, SQLAlchemy Core,
    the service's tables and SQLite pragmas (WAL, synchronous=NORMAL, busy timeout)."""
    from fastapi import FastAPI, HTTPException
    from sqlalchemy import (
        JSON,
        Column,
        DateTime,
        Integer,
        LargeBinary,
        MetaData,
        String,
        Uuid,
        event,
        insert,
        select,
        update,
    )
    from sqlalchemy import Table as SqlTable
    from sqlalchemy.ext.asyncio import create_async_engine

    metadata = MetaData()
    profiles = SqlTable(
        "profiles", metadata, Column("id", Uuid, primary_key=True), Column("email", String),
        Column("display_name", String), Column("phone", String), Column("avatar_url", String),
        Column("preferences", JSON), Column("created_at", DateTime(timezone=True)),
        Column("updated_at", DateTime(timezone=True)),
        Column("deleted_at", DateTime(timezone=True)))
    outbox = SqlTable(
        "outbox", metadata, Column("id", Integer, primary_key=True),
        Column("event_id", String), Column("topic", String), Column("key", String),
        Column("event_type", String), Column("payload", LargeBinary), Column("headers", JSON),
        Column("created_at", DateTime(timezone=True)),
        Column("published_at", DateTime(timezone=True)), Column("attempts", Integer))
    sqlite = database_url.startswith("sqlite")
    engine = create_async_engine(database_url, **(
        {"connect_args": {"timeout": 10}} if sqlite else {"pool_pre_ping": True}))
    if sqlite:
        @event.listens_for(engine.sync_engine, "connect")
        def pragmas(connection: Any, _: Any) -> None:
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000"):
                connection.execute(f"PRAGMA {pragma}")

    app = FastAPI()
    live = profiles.c.deleted_at.is_(None)

    def public(row: Any) -> dict[str, Any]:
        data = dict(row._mapping)
        data.pop("deleted_at")
        return {**data, "id": str(data["id"])}

    @app.get("/users/{user_id}")
    async def read(user_id: uuid.UUID) -> dict[str, Any]:
        async with engine.connect() as conn:
            row = (await conn.execute(
                select(profiles).where(profiles.c.id == user_id, live))).first()
        if row is None:
            raise HTTPException(404)
        return {"data": public(row)}

    @app.patch("/users/{user_id}")
    async def patch(user_id: uuid.UUID, body: dict[str, Any]) -> dict[str, Any]:
        name = str(body["display_name"])
        async with engine.begin() as conn:
            row = (await conn.execute(
                select(profiles).where(profiles.c.id == user_id, live))).first()
            if row is None:
                raise HTTPException(404)
            now = utcnow()
            await conn.execute(update(profiles).where(profiles.c.id == user_id)
                               .values(display_name=name, updated_at=now))
            event_id = str(uuid.uuid4())
            payload = {"event_id": event_id, "event_type": "user.profile_updated",
                       "event_version": 1, "timestamp": now.isoformat(), "service_name": "bare",
                       "aggregate_id": str(user_id), "data": {
                           "user_id": str(user_id), "email": row.email, "display_name": name,
                           "phone": row.phone, "avatar_url": row.avatar_url,
                           "changed": ["display_name"]}}
            await conn.execute(insert(outbox).values(
                event_id=event_id, topic="user.events", key=str(user_id),
                event_type="user.profile_updated", payload=json.dumps(payload).encode(),
                headers=[["event_type", "user.profile_updated"]], created_at=now,
                published_at=now, attempts=0))
        return {"data": {**public(row), "display_name": name, "updated_at": now}}

    return app


def utcnow() -> Any:
    from datetime import UTC, datetime
    return datetime.now(UTC)


# --- the run --------------------------------------------------------------------------------


SERVER_PIDS: dict[str, int] = {}
"""The process behind each server URL, for its CPU time."""

SERVICE_ENDPOINTS = {
    "PATCH": Endpoint("PATCH", "/users/{id}",
                      """string.format('{"display_name":"name %d"}', n)"""),
    "GET": Endpoint("GET", "/users/{id}"),
}


def load_of(args: argparse.Namespace, seconds: float | None = None) -> Load:
    return Load(connections=args.concurrency, threads=args.threads,
                seconds=max(1, round(args.seconds if seconds is None else seconds)))


@contextlib.contextmanager
def server(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.crud", "--serve", str(port), *args],
                            env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + 60
        while not port_accepts(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the {args[0]} server did not start")
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        SERVER_PIDS[url] = proc.pid
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


async def seed(database_url: str, count: int) -> list[str]:
    """Profiles written straight into the service's table (it has migrated it)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    ids = [uuid.uuid4() for _ in range(count)]
    now = utcnow()
    async with engine.begin() as conn:
        for user_id in ids:
            await conn.execute(text(
                "INSERT INTO profiles (id, email, display_name, phone, avatar_url, preferences, "
                "created_at, updated_at) VALUES (:id, :email, :name, NULL, NULL, :prefs, :now, "
                ":now)"), {"id": user_id.hex if database_url.startswith("sqlite") else user_id,
                           "email": f"{user_id.hex[:8]}@bench.org", "name": user_id.hex[:8],
                           "prefs": json.dumps({"language": "en"}), "now": now})
    await engine.dispose()
    return [str(i) for i in ids]


async def run_backend(name: str, database_url: str, kafka: str, args: argparse.Namespace,
                      headers: dict[str, str]) -> dict[str, dict[str, Result]]:
    commands = {"service": ("service", database_url, kafka, "300"),
                "service, no cache": ("service", database_url, kafka, "0.000001"),
                "bare": ("bare", database_url)}
    with contextlib.ExitStack() as stack:
        urls = {"service": stack.enter_context(server(*commands["service"]))}  # migrates
        ids = await seed(database_url, args.profiles)
        for contender in CONTENDERS[1:]:
            urls[contender] = stack.enter_context(server(*commands[contender]))
        return await interleaved(name, urls, SERVICE_ENDPOINTS, ids, headers, args)


async def run_widgets(database_url: str, dsn: str,
                      args: argparse.Namespace) -> dict[str, dict[str, Result]]:
    """BaseRouter against the bare asyncpg app, rounds rotating which goes first."""
    from bench.crud import widgets as crud_widgets

    await crud_widgets.create_tables(database_url)
    with contextlib.ExitStack() as stack:
        urls = {"router": stack.enter_context(server("widgets", database_url)),
                "bare asyncpg": stack.enter_context(server("widgets-bare", dsn))}
        ids = await crud_widgets.seed(urls["router"], args.profiles)
        return await interleaved("PostgreSQL widgets", urls, crud_widgets.ENDPOINTS, ids, {},
                                 args)


async def interleaved(name: str, urls: dict[str, str], endpoints: dict[str, Endpoint],
                      ids: Sequence[str], headers: dict[str, str],
                      args: argparse.Namespace) -> dict[str, dict[str, Result]]:
    """Each contender (in `urls`' order) measured on each endpoint, `args.rounds` times, the
    order rotating each round so no contender always goes first; the median per endpoint.
    One unmeasured second per contender and endpoint first (connections, caches, JIT-less
    warm paths)."""
    contenders = list(urls)
    for contender in contenders:
        for endpoint in endpoints.values():
            await asyncio.to_thread(measure, urls[contender], endpoint, ids, load_of(args, 1),
                                    headers, None)
    samples: dict[str, dict[str, list[Result]]] = {c: {} for c in contenders}
    for n in range(args.rounds):
        shift = n % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            for method, endpoint in endpoints.items():
                with console.status(f"{name}, round {n + 1}/{args.rounds}: "
                                    f"{contender}: {method}"):
                    url = urls[contender]
                    result = await asyncio.to_thread(measure, url, endpoint, ids,
                                                     load_of(args), headers,
                                                     SERVER_PIDS.get(url))
                samples[contender].setdefault(method, []).append(result)
    return {contender: {method: median_of(results) for method, results in methods.items()}
            for contender, methods in samples.items()}


def median_of(results: list[Result]) -> Result:
    def median(field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in results))

    return Result(median("rate"), median("p50_ms"), median("p99_ms"),
                  sum(r.errors for r in results), median("cpu_ms"))


def report(backend: str, results: dict[str, dict[str, Result]], args: argparse.Namespace,
           baseline: str = BASELINE, path: str = "/users/{id}") -> None:
    table = Table(title=f"{backend}: {path}, wrk {args.concurrency} connections, median of "
                        f"{args.rounds} rounds of {args.seconds:g} s"
                        + (f", {args.profiles} profiles" if baseline == BASELINE else ""))
    for column in ("contender", "method", "req/s", "p50 ms", "p99 ms", "errors",
                   "server CPU ms/req", f"req/s vs {baseline}", f"p50 vs {baseline}",
                   f"CPU/req: {baseline} ÷ it"):
        table.add_column(column, justify="left" if column in ("contender", "method")
                         else "right")
    for contender, methods in results.items():
        for method, r in methods.items():
            base = results[baseline][method]
            table.add_row(contender, method, f"{r.rate:,.0f}", f"{r.p50_ms:.2f}",
                          f"{r.p99_ms:.2f}", str(r.errors), f"{r.cpu_ms:.2f}",
                          f"{r.rate / base.rate:.2f}x", f"{r.p50_ms / base.p50_ms:.2f}x",
                          f"{base.cpu_ms / r.cpu_ms:.2f}x" if r.cpu_ms else "-")
    console.print(table)


async def run(args: argparse.Namespace) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from devinfra.kafka import KafkaBroker
    from devinfra.postgres import PostgresServer

    private = ed25519.Ed25519PrivateKey.generate()
    os.environ["BENCH_KEY"] = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    now = int(time.time())
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-admin", "iat": now,
                        "exp": now + 3600, "kind": "user",
                        "permissions": ["users:read", "users:write"]},
                       private, algorithm="EdDSA",
                       headers={"kid": KID, "typ": ACCESS_TOKEN_TYPE})
    headers = {"Authorization": f"Bearer {token}"}
    with console.status("starting Kafka" + (" and PostgreSQL" if args.postgres else "")):
        broker = None if args.widgets_only else await asyncio.to_thread(KafkaBroker.start)
        pg = await asyncio.to_thread(PostgresServer.start) if args.postgres else None
    everything: dict[str, Any] = {}
    try:
        if pg is not None:
            # their own database: the user service migrates its own, outbox table included
            await _create_database(pg.url, WIDGETS_DATABASE)
            widgets = await run_widgets(_on(pg.url, WIDGETS_DATABASE),
                                        _on(pg.dsn, WIDGETS_DATABASE), args)
            report("PostgreSQL", widgets, args, "bare asyncpg", "BaseRouter /widgets")
            record_aims(widgets)
            everything["PostgreSQL widgets"] = {c: {m: asdict(r) for m, r in methods.items()}
                                                for c, methods in widgets.items()}
        if broker is not None:
            await run_services(broker.bootstrap_servers, pg.url if pg else None, args, headers,
                               everything)
    finally:
        if pg is not None:
            await asyncio.to_thread(pg.close)
        if broker is not None:
            await asyncio.to_thread(broker.close)
        console.print(f"uvicorn, one worker, default loop and HTTP; load average after the run "
                      f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        save(args, everything)


WIDGETS_DATABASE = "bench_widgets"
AIMS = {"GET read": ("BaseRouter read vs bare asyncpg", 0.6),
        "POST create": ("BaseRouter create vs bare asyncpg", 0.5)}


def record_aims(widgets: dict[str, dict[str, Result]]) -> None:
    """Issue 24's aims, by requests/s under wrk (the client no longer caps it); the CPU time
    per request, the other view, is in the text."""
    for method, (name, floor) in AIMS.items():
        mine, bare = widgets["router"][method], widgets["bare asyncpg"][method]
        ratio = mine.rate / bare.rate
        cpu = f"; CPU/request {bare.cpu_ms / mine.cpu_ms:.2f}x ({mine.cpu_ms:.2f} vs " \
              f"{bare.cpu_ms:.2f} ms)" if mine.cpu_ms and bare.cpu_ms else ""
        aims.record("crud", name, measured=f"{ratio:.2f}x by req/s under wrk "
                    f"({mine.rate:,.0f} vs {bare.rate:,.0f}){cpu}",
                    aim=f"≥ {floor}x", met=ratio >= floor)


async def _create_database(url: str, name: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        await admin.dispose()


def _on(url: str, database: str) -> str:
    """`url` (a server's URL or DSN, ending in its database) naming `database` instead."""
    return f"{url.rsplit('/', 1)[0]}/{database}"


async def run_services(kafka: str, pg_url: str | None, args: argparse.Namespace,
                       headers: dict[str, str], everything: dict[str, Any]) -> None:
    """The user service against the bare SQLAlchemy Core app, on SQLite and PostgreSQL."""
    with tempfile.TemporaryDirectory() as tmp:
        backends = [("SQLite", f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")]
        if pg_url is not None:
            backends.append(("PostgreSQL", pg_url))
        for backend, url in backends:
            results = await run_backend(backend, url, kafka, args, headers)
            report(backend, results, args)
            everything[backend] = {c: {m: asdict(r) for m, r in methods.items()}
                                   for c, methods in results.items()}


def save(args: argparse.Namespace, everything: dict[str, Any]) -> None:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "concurrency": args.concurrency, "seconds": args.seconds, "rounds": args.rounds,
            "profiles": args.profiles, "results": everything}, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.crud", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--profiles", type=int, default=1000)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL too")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--widgets-only", action="store_true",
                        help="with --postgres: only BaseRouter against bare asyncpg")
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        port, kind, *rest = args.serve
        if kind == "service":
            serve_service(int(port), rest[0], rest[1], float(rest[2]))
        elif kind.startswith("widgets"):
            serve_widgets(int(port), kind, rest[0])
        else:
            serve_bare(int(port), rest[0])
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

