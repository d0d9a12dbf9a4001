"""wrk, the load generator of `bench.gateway`: one closed-loop run, its numbers as data.

wrk's own `done()` hook prints the summary as one JSON line (microsecond percentiles from its
HdrHistogram-like recorder), so nothing is scraped from the human-readable report. Responses
that are not 2xx/3xx count as errors (`status`), beside wrk's socket errors and timeouts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MARK = "WRK_JSON "
LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, e.connect, e.read,
    e.write, e.status, e.timeout))
end
"""


class WrkError(RuntimeError):
    """wrk could not run, or its run is not a result (errors, nothing measured)."""


@dataclass(frozen=True, slots=True)
class Load:
    """How wrk loads a contender: the same for every contender in one run."""

    connections: int
    threads: int
    seconds: int
    """Whole seconds: wrk takes no fractions."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk not found: run scripts/bootstrap.sh (or apt-get install wrk)")
    return found


def write_script(directory: Path) -> Path:
    path = directory / "report.lua"
    path.write_text(LUA)
    return path


def parse(output: str) -> WrkResult:
    """The JSON line of `LUA` in wrk's output."""
    line = next((x for x in output.splitlines() if x.startswith(MARK)), None)
    if line is None:
        raise WrkError(f"wrk printed no summary:\n{output[-2000:]}")
    raw = json.loads(line[len(MARK):])
    seconds = raw["duration_us"] / 1e6
    if raw["requests"] == 0 or seconds <= 0:
        raise WrkError(f"wrk measured nothing:\n{output[-2000:]}")
    return WrkResult(
        requests=raw["requests"], seconds=seconds, rate=raw["requests"] / seconds,
        p50_ms=raw["p50_us"] / 1000, p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000, max_ms=raw["max_us"] / 1000,
        errors={k: raw[k] for k in ("connect", "read", "write", "status", "timeout") if raw[k]})


def run_wrk(url: str, load: Load, script: Path, headers: dict[str, str]) -> WrkResult:
    """One wrk run against `url`; failed requests are counted in `errors`, not raised: a
    contender that times out under load is a result too (a bad one)."""
    argv = [wrk_binary(), f"-t{load.threads}", f"-c{load.connections}",
            f"-d{load.seconds}s", "--timeout", "5s", "-s", str(script)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    done = subprocess.run([*argv, url], capture_output=True, text=True, check=False,
                          timeout=load.seconds + 30)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}:\n{output[-2000:]}")
    return parse(output)
