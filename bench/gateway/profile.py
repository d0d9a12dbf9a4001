"""`python -m bench.gateway --profile`: where the gateway's CPU goes per request.

One gateway process (1 worker, so the profiled process is the one that serves) runs in front
of the bench's upstream (bench/gateway/profiled.py), wrk loads it as the default run does (the
same token on every request, the same route), and cProfile records exactly the measured
window (switched on after the warm-up, off and written when wrk is done), in CPU time.
Printed: the functions with the most own time, and the cumulative time of the gateway's own
code, each as µs per request (cProfile's overhead inflates small functions: compare entries,
not totals, with the bench's CPU column).
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import signal
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from bench.gateway import procs
from bench.gateway.wrk import Load, run_wrk, write_script
from devinfra.process import wait_until

OWN_CODE = ("/gateway/", "/core/")
PER_REQUEST = ("gateway/client_address.py", "forwarded_headers")


def run(args: argparse.Namespace, console: Console) -> int:
    credentials = procs.Credentials.make()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-profile-") as tmp:
        workdir = Path(tmp)
        script = write_script(workdir)
        output = args.json.with_suffix(".prof")
        output.parent.mkdir(parents=True, exist_ok=True)
        upstream = procs.start_upstream(workdir, credentials)
        base = upstream.url.removesuffix(procs.PATH)
        gateway = procs.start_gateway(workdir, "gateway", 1, base, None,
                                      profile=output.resolve())
        try:
            procs.wait_ready(gateway, credentials.headers)
            run_wrk(gateway.url, Load(args.connections, args.threads, 1), script,
                    credentials.headers)  # warm: connections, caches
            pid = gateway.processes[0].pid
            assert pid is not None
            os.kill(pid, signal.SIGUSR1)
            result = run_wrk(gateway.url, Load(args.connections, args.threads, args.duration),
                             script, credentials.headers)
            output.unlink(missing_ok=True)
            os.kill(pid, signal.SIGUSR2)
            wait_until(output.exists, timeout=30, what="the profile")
        finally:
            gateway.stop()
            upstream.stop()
    console.print(f"{result.requests:,} requests in {result.seconds:.1f} s under cProfile "
                  f"({result.rate:,.0f}/s, errors {result.errors or 0}); profile in {output}")
    print_profile(console, output, result.requests, args.top)
    return 0


def print_profile(console: Console, path: Path, requests: int, top: int) -> None:
    """The top entries by own time and by cumulative time (own code), in µs per request.
    cProfile counts each resumption of a coroutine as a call: calls/req of an `async def`
    is its awaits that suspended, plus one."""
    stats = pstats.Stats(str(path), stream=io.StringIO())
    rows = stats.stats  # type: ignore[attr-defined]
    # Requests the gateway handled in the window (wrk counts only those it saw answered):
    # calls of a plain function the gateway calls once per proxied request.
    handled = [entry[1] for (file, _, name), entry in rows.items()
               if name == PER_REQUEST[1] and file.endswith(PER_REQUEST[0])]
    requests = handled[0] if handled else requests
    total = sum(entry[2] for entry in rows.values())
    console.print(f"{requests:,} requests handled; {1e6 * total / requests:.0f} µs of CPU per "
                  "request as profiled (cProfile's own cost included)")

    def show(title: str, key: int, keep: tuple[str, ...]) -> None:
        console.print(f"\n[bold]{title}[/]")
        console.print(f"{'µs/req':>8} {'%':>5} {'calls/req':>9}  function")
        chosen = sorted(((func, entry) for func, entry in rows.items()
                         if not keep or any(k in func[0] for k in keep)),
                        key=lambda item: -item[1][key])[:top]
        for (file, line, name), entry in chosen:
            where = _short(file)
            print(f"{1e6 * entry[key] / requests:8.1f} {100 * entry[key] / total:5.1f} "
                  f"{entry[1] / requests:9.2f}  {name} ({where}:{line})")

    show("own time (tottime)", 2, ())
    show("cumulative time, the gateway's and core's own functions", 3, OWN_CODE)
    sys.stdout.flush()


def _short(file: str) -> str:
    for marker in ("site-packages/", "/gwperf/", "/main/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file
