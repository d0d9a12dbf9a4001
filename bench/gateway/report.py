"""The tables of `bench.gateway`: medians over rounds, what each proxy adds to calling the
upstream directly, and the issue's aims (added p50 under 1 ms, half of nginx's requests/s,
at most 150 µs of CPU per request)."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.gateway.wrk import WrkResult

DIRECT, NGINX = "direct", "nginx"
AIM_ADDED_P50_MS = 1.0
AIM_OF_NGINX = 0.5
AIM_CPU_US = 150.0
"""CPU per request under load (Kong: about 8,000 requests/s per vCPU, 125 µs, with key
authentication and rate limiting on)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One round of one contender: under load, one request at a time, and the CPU the proxy
    (all its processes) and the upstream spent per request under load."""

    loaded: WrkResult
    single: WrkResult
    proxy_cpu_us: float
    upstream_cpu_us: float

    def as_json(self) -> dict[str, Any]:
        return {"loaded": self.loaded.as_json(), "single": self.single.as_json(),
                "proxy_cpu_us_per_request": self.proxy_cpu_us,
                "upstream_cpu_us_per_request": self.upstream_cpu_us}


Samples = dict[str, list[Sample]]


def median(samples: Samples, key: str, pick: Callable[[Sample], float]) -> float:
    return float(statistics.median(pick(s) for s in samples[key]))


def _add_columns(table: Table, names: list[str]) -> None:
    for name in names:
        if name == "contender":
            table.add_column(name, no_wrap=True)
        else:
            table.add_column(name, justify="right")


def _errors(results: list[WrkResult]) -> str:
    """Failed requests over all rounds, by kind (wrk's: non-2xx/3xx status, timeout, ...)."""
    total: dict[str, int] = {}
    for result in results:
        for kind, count in result.errors.items():
            total[kind] = total.get(kind, 0) + count
    return " ".join(f"{kind} {count}" for kind, count in total.items()) or "0"


def _added(value: float, base: float) -> str:
    return f"{value - base:+.2f}"


def print_tables(console: Console, samples: Samples, labels: dict[str, str],
                 args: argparse.Namespace) -> None:
    rounds = len(samples[DIRECT])
    loaded_s = samples[DIRECT][0].loaded.seconds
    single_s = samples[DIRECT][0].single.seconds
    has_nginx = NGINX in samples
    what = "server and client choice, stand-in proxy" if args.choice else "GET /api/ping"

    table = Table(title=f"{what}: under load, wrk -t{args.threads} -c{args.connections}, "
                        f"median of {rounds} round(s) of {loaded_s:.0f} s", title_style="bold")
    columns = ["contender", "req/s", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms", "of direct"]
    columns += ["of nginx"] if has_nginx else []
    columns += ["proxy µs CPU", "upstr. µs CPU", "errors"]
    _add_columns(table, columns)
    base_rate = median(samples, DIRECT, lambda s: s.loaded.rate)
    base_p50 = median(samples, DIRECT, lambda s: s.loaded.p50_ms)
    base_p99 = median(samples, DIRECT, lambda s: s.loaded.p99_ms)
    nginx_rate = median(samples, NGINX, lambda s: s.loaded.rate) if has_nginx else 0.0
    for key in samples:
        rate = median(samples, key, lambda s: s.loaded.rate)
        p50 = median(samples, key, lambda s: s.loaded.p50_ms)
        p99 = median(samples, key, lambda s: s.loaded.p99_ms)
        row = [labels[key], f"{rate:,.0f}", f"{p50:.2f}", f"{p99:.2f}",
               _added(p50, base_p50), _added(p99, base_p99), f"{rate / base_rate:.0%}"]
        row += [f"{rate / nginx_rate:.0%}"] if has_nginx else []
        cpu = median(samples, key, lambda s: s.proxy_cpu_us)
        row += ["—" if key == DIRECT else f"{cpu:.0f}",
                f"{median(samples, key, lambda s: s.upstream_cpu_us):.0f}",
                _errors([s.loaded for s in samples[key]])]
        table.add_row(*row)
    console.print(table)

    table = Table(title=f"{what}: one request at a time, wrk -t1 -c1, median of {rounds} "
                        f"round(s) of {single_s:.0f} s", title_style="bold")
    _add_columns(table, ["contender", "req/s", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms",
                         "errors"])
    base_p50 = median(samples, DIRECT, lambda s: s.single.p50_ms)
    base_p99 = median(samples, DIRECT, lambda s: s.single.p99_ms)
    for key in samples:
        p50 = median(samples, key, lambda s: s.single.p50_ms)
        p99 = median(samples, key, lambda s: s.single.p99_ms)
        table.add_row(labels[key], f"{median(samples, key, lambda s: s.single.rate):,.0f}",
                      f"{p50:.3f}", f"{p99:.3f}", _added(p50, base_p50),
                      _added(p99, base_p99), _errors([s.single for s in samples[key]]))
    console.print(table)


@dataclass(frozen=True, slots=True)
class Aim:
    contender: str
    measure: str
    value: float
    unit: str
    required: str | None
    """The issue's aim, or None for a ratio shown for information."""
    passed: bool | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def aims(samples: Samples, labels: dict[str, str]) -> list[Aim]:
    """Per gateway contender: its ratios to nginx and to direct, and what it adds."""
    found: list[Aim] = []
    for key in samples:
        if not key.startswith("gateway"):
            continue
        label = labels[key]
        rate = median(samples, key, lambda s: s.loaded.rate)
        added_p50 = (median(samples, key, lambda s: s.single.p50_ms)
                     - median(samples, DIRECT, lambda s: s.single.p50_ms))
        added_p99 = (median(samples, key, lambda s: s.single.p99_ms)
                     - median(samples, DIRECT, lambda s: s.single.p99_ms))
        of_nginx = rate / median(samples, NGINX, lambda s: s.loaded.rate)
        of_direct = rate / median(samples, DIRECT, lambda s: s.loaded.rate)
        cpu = median(samples, key, lambda s: s.proxy_cpu_us)
        found += [
            Aim(label, "req/s gateway / nginx", of_nginx, "x", f"≥ {AIM_OF_NGINX:g}",
                of_nginx >= AIM_OF_NGINX),
            Aim(label, "CPU per request under load", cpu, "µs", f"≤ {AIM_CPU_US:g} µs",
                cpu <= AIM_CPU_US),
            Aim(label, "req/s gateway / direct", of_direct, "x", None, None),
            Aim(label, "added p50, one at a time", added_p50, "ms",
                f"< {AIM_ADDED_P50_MS:g} ms", added_p50 < AIM_ADDED_P50_MS),
            Aim(label, "added p99, one at a time", added_p99, "ms", None, None),
        ]
    return found


def aims_table(found: list[Aim]) -> Table:
    table = Table(title="Ratios and the issue's aims", title_style="bold")
    _add_columns(table, ["contender", "measure", "value", "aim", "verdict"])
    for aim in found:
        value = (f"{aim.value:.2f}x" if aim.unit == "x" else f"{aim.value:.0f} µs"
                 if aim.unit == "µs" else f"{aim.value:+.3f} ms")
        verdict: Text | str = ""
        if aim.passed is not None:
            verdict = Text("PASS", "bold green") if aim.passed else Text("MISS", "bold red")
        table.add_row(aim.contender, aim.measure, value, aim.required or "", verdict)
    return table


def cpu_note(args: argparse.Namespace, cpus: int, load_before: float,
             load_after: float) -> str:
    return (f"• Machine: {cpus} CPUs, shared by wrk ({args.threads} thread), the proxy and "
            f"the upstream; nothing is pinned. Under load they compete for the cores, so a "
            f"proxy's requests/s is what the upstream and wrk leave it: compare ratios and CPU "
            f"µs per request (proxy µs CPU: user + system time of all the contender's "
            f"processes per request under load; upstr.: the upstream's), not absolute numbers. "
            f"+p50/+p99: minus direct's. Load average before the run "
            f"{load_before:.2f}, after {load_after:.2f} (the bench itself adds about 2).")
