"""The gateway part: the gateway with observability off, metrics only (as shipped with
tracing not configured) and metrics + tracing, in front of `bench.gateway`'s upstream, each
loaded by wrk in interleaved rounds."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.gateway import procs
from bench.gateway.wrk import Load, WrkResult, run_wrk, write_script
from devinfra.process import free_port

READY_SECONDS = 120.0
VARIANTS = (
    ("off", "off", ["-m", "bench.observability.edge", "off"],
     "create_app() without its metrics, tracing not configured"),
    ("metrics", "metrics", ["-m", "gateway"],
     "python -m gateway as shipped: EdgeMiddleware (multiprocess mode), tracing not configured"),
    ("on", "metrics + tracing", ["-m", "bench.observability.edge", "on"],
     "EdgeMiddleware + ServerSpans, every request traced, spans dropped by the exporter"),
)


@dataclass
class GatewayRuns:
    labels: dict[str, str]
    notes: dict[str, str]
    loaded: dict[str, list[WrkResult]]

    def median(self, key: str, pick: Callable[[WrkResult], float]) -> float | None:
        found = [pick(r) for r in self.loaded.get(key, [])]
        return float(statistics.median(found)) if found else None


def start(workdir: Path, key: str, argv: list[str], workers: int,
          upstream_base: str) -> procs.Running:
    """As `procs.start_gateway` (same routes, token check, in-process limiter), another
    command line."""
    here = workdir / key
    here.mkdir(parents=True, exist_ok=True)
    (here / "routes.toml").write_text(procs.routes_toml())
    port = free_port()
    env: dict[str, str | None] = {
        "SERVICE_PORT": str(port), "SERVICE_HOST": "127.0.0.1",
        "GATEWAY_ROUTES_FILE": str(here / "routes.toml"), "GATEWAY_WORKERS": str(workers),
        "REGISTRY_BACKEND": "static", "REGISTRY_STATIC": f"bench-upstream={upstream_base}",
        "JWKS_URL": f"{upstream_base}/.well-known/jwks.json", "JWT_ISSUER": procs.ISSUER,
        "JWT_AUDIENCE": procs.AUDIENCE, "LOG_LEVEL": "WARNING", "ENVIRONMENT": "development",
        "REDIS_URL": None, "OTEL_TRACES_EXPORTER": None, "OTEL_TRACES_FILE": None,
        "OTEL_TRACES_SAMPLER": None, "GATEWAY_UPSTREAM_CLIENT": "h1"}
    process = procs._process(key, [sys.executable, *argv], workdir, env)
    return procs.Running(key, key, "", f"http://127.0.0.1:{port}{procs.PATH}", [process])


def ready(running: procs.Running, headers: dict[str, str]) -> None:
    """`procs.wait_ready` with more time: three gateways of two workers each start at once,
    and on a loaded 2-core machine a worker's imports alone can take 20 s."""
    procs.wait_ready(running, headers, READY_SECONDS)


def measure(workdir: Path, *, rounds: int, seconds: int, connections: int, workers: int,
            log: Callable[[str], None]) -> GatewayRuns:
    credentials = procs.Credentials.make()
    script = write_script(workdir)
    runs = GatewayRuns({k: label for k, label, _, _ in VARIANTS},
                       {k: note for k, _, _, note in VARIANTS}, {k: [] for k, *_ in VARIANTS})
    started: list[procs.Running] = []
    try:
        upstream = procs.start_upstream(workdir, credentials)
        started.append(upstream)
        base = upstream.url.removesuffix(procs.PATH)
        gateways = []
        for key, _, argv, _ in VARIANTS:
            running = start(workdir, f"gateway-{key}", argv, workers, base)
            started.append(running)
            gateways.append((key, running))
        for _, running in gateways:
            ready(running, credentials.headers)
        everyone = [p.pid for r in started for p in r.processes if p.pid is not None]
        load = Load(connections, 1, seconds)
        for _, running in gateways:  # warm-up, not measured
            run_wrk(running.url, Load(connections, 1, 1), script, credentials.headers)
        for n in range(rounds):
            order = gateways[n % len(gateways):] + gateways[:n % len(gateways)]
            for key, running in order:
                procs.settle(everyone)
                result = run_wrk(running.url, load, script, credentials.headers)
                runs.loaded[key].append(result)
                errors = sum(result.errors.values())
                log(f"round {n + 1}/{rounds} gateway  {runs.labels[key]:<22} "
                    f"{result.rate:>7,.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:6.2f} ms" + (f"  errors {errors}" if errors else ""))
    finally:
        for running in reversed(started):
            running.stop()
    return runs
