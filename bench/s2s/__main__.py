"""`python -m bench.s2s`: the service-to-service client against bare httpx and aiohttp.

Starts a small upstream (a raw ASGI app under uvicorn, with uvloop and httptools when they are
installed) in its own process, then measures, in rounds that interleave the contenders, calls
per second and latency p50/p99 of `--concurrency` callers doing small GETs for `--seconds` each:

    httpx        httpx.AsyncClient, keep-alive       client/httpx     ServiceClient over httpx
    aiohttp      aiohttp.ClientSession, keep-alive   client/aiohttp   ServiceClient over aiohttp

and prints the medians over rounds and what the client adds over the bare library under it.

    uv run python -m bench.s2s                      # 5 rounds of 3 s, 64 callers
    uv run python -m bench.s2s --rounds 3 --seconds 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import httpx
from rich.console import Console
from rich.table import Table

from bench.common.stats import percentile
from core.http import ClientConfig, ServiceClient
from core.http.aiohttp_transport import AiohttpTransport
from core.http.httpx_transport import HttpxTransport
from core.http.transport import Transport
from core.resilience import RetryPolicy
from core.service_registry import Change, Instance, ServiceRegistry
from devinfra.process import free_port, port_accepts

console = Console(width=120)
BODY = b'{"id":42,"name":"Ada","active":true}'
Call = Callable[[], Awaitable[None]]


# --- the upstream (its own process) ---------------------------------------------------------


async def upstream_app(scope: dict[str, object], receive: Callable[[], Awaitable[object]],
                       send: Callable[[dict[str, object]], Awaitable[None]]) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


def serve(port: int) -> None:
    import uvicorn

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    uvicorn.run(upstream_app, host="127.0.0.1", port=port, loop=loop, http=http,
                log_level="warning", access_log=False, backlog=4096)


# --- the contenders -------------------------------------------------------------------------


class OneInstance(ServiceRegistry):
    """The upstream, as the registry would report it."""

    def __init__(self, url: str) -> None:
        self._instances = [Instance("upstream", "upstream-1", url)]

    async def register(self, instance: Instance) -> None: ...

    async def heartbeat(self) -> None: ...

    async def deregister(self) -> None: ...

    async def discover(self, service: str) -> list[Instance]:
        return self._instances

    async def watch(self, service: str | None = None) -> AsyncIterator[Change]:
        yield Change("upstream", tuple(self._instances))


@contextlib.asynccontextmanager
async def bare_httpx(url: str, pool: int) -> AsyncIterator[Call]:
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        async def call() -> None:
            response = await client.get(url + "/users/42")
            assert response.status_code == 200 and response.content == BODY
        yield call


@contextlib.asynccontextmanager
async def bare_aiohttp(url: str, pool: int) -> AsyncIterator[Call]:
    connector = aiohttp.TCPConnector(limit=pool)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def call() -> None:
            async with session.get(url + "/users/42") as response:
                body = await response.read()
            assert response.status == 200 and body == BODY
        yield call


def service_client(make: Callable[[int], Transport]) -> Callable[[str, int],
                                                                 contextlib.AbstractAsyncContextManager[Call]]:
    @contextlib.asynccontextmanager
    async def contender(url: str, pool: int) -> AsyncIterator[Call]:
        config = ClientConfig(max_in_flight=pool * 4, retry=RetryPolicy(max_attempts=1))
        async with ServiceClient(OneInstance(url), config=config,
                                 transport=make(pool)) as client:
            async def call() -> None:
                response = await client.get("upstream", "/users/42")
                assert response.status_code == 200 and response.content == BODY
            yield call
    return contender


CONTENDERS = {
    "httpx": bare_httpx,
    "aiohttp": bare_aiohttp,
    "client/httpx": service_client(HttpxTransport),
    "client/aiohttp": service_client(AiohttpTransport),
}
BASELINE = {"client/httpx": "httpx", "client/aiohttp": "aiohttp"}


@dataclass(frozen=True, slots=True)
class Round:
    rate: float
    p50_ms: float
    p99_ms: float


async def measure(call: Call, callers: int, seconds: float) -> Round:
    for _ in range(callers):  # warm the pool: every caller gets a connection
        await asyncio.gather(*(call() for _ in range(callers)))
    latencies: list[int] = []
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter_ns()
            await call()
            latencies.append(time.perf_counter_ns() - started)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - began
    ms = [v / 1e6 for v in latencies]
    return Round(len(ms) / elapsed, percentile(ms, 50), percentile(ms, 99))


async def run(args: argparse.Namespace) -> None:
    port = free_port()
    upstream = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.s2s",
                                                    "--serve", str(port))
    try:
        deadline = time.monotonic() + 30
        while not port_accepts(port):
            if upstream.returncode is not None or time.monotonic() > deadline:
                raise SystemExit("the upstream did not start")
            await asyncio.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        results: dict[str, list[Round]] = {name: [] for name in CONTENDERS}
        names = list(CONTENDERS)
        for n in range(args.rounds):
            order = names[n % len(names):] + names[:n % len(names)]  # rotate who goes first
            for name in order:
                with console.status(f"round {n + 1}/{args.rounds}: {name}"):
                    async with CONTENDERS[name](url, args.concurrency) as call:
                        results[name].append(await measure(call, args.concurrency,
                                                           args.seconds))
        report(results, args)
    finally:
        upstream.terminate()
        await upstream.wait()


def report(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    def median(name: str, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in results[name]))

    table = Table(title=f"small GETs, {args.concurrency} callers, median of {args.rounds} "
                        f"rounds of {args.seconds:g} s")
    for column in ("contender", "calls/s", "p50 ms", "p99 ms", "added p50 ms",
                   "added p99 ms", "vs bare calls/s"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for name in results:
        rate, p50, p99 = (median(name, a) for a in ("rate", "p50_ms", "p99_ms"))
        added = ["", "", ""]
        if (base := BASELINE.get(name)) is not None:
            added = [f"{p50 - median(base, 'p50_ms'):+.2f}",
                     f"{p99 - median(base, 'p99_ms'):+.2f}",
                     f"{100 * (rate / median(base, 'rate') - 1):+.1f}%"]
        table.add_row(name, f"{rate:,.0f}", f"{p50:.2f}", f"{p99:.2f}", *added)
    console.print(table)
    load = os.getloadavg()[0]
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    console.print(f"upstream: uvicorn, loop={loop}, http={http}; load average after the run "
                  f"{load:.2f} on {os.cpu_count()} CPUs")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.s2s", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
