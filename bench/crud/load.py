"""The CRUD benchmark's load: wrk (the gateway benchmark's runner, `bench.gateway.wrk`) with a
Lua script per endpoint, so the client never caps what a server can do, as one Python client
process did (about 250 req/s for every contender alike).

An endpoint is a method, a path (`{id}` replaced by a random id of the run's rows on each
request) and, for a write, a JSON body made in Lua from a per-connection-thread counter `n`,
so each write differs. The server's CPU time per request is read from /proc around the run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.gateway.wrk import LUA as REPORT_LUA
from bench.gateway.wrk import Load, run_wrk

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    """`{id}` is replaced, request by request, by one of the run's ids."""
    body: str | None = None
    """A Lua expression of the body; `n` counts this thread's requests."""


@dataclass(frozen=True, slots=True)
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float = 0.0
    """The server process's CPU time per request (user + system)."""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of ASCII text is a valid Lua string literal


def script(endpoint: Endpoint, ids: Sequence[str]) -> str:
    """wrk's Lua: `request()` builds each request, `done()` prints the summary as JSON."""
    head, _, tail = endpoint.path.partition("{id}")
    lines = [
        "local ids = {" + ",".join(_lua_string(i) for i in ids) + "}",
        "local n = 0",
        "local headers = nil",
        "request = function()",
        "  if headers == nil then",  # wrk.format takes these instead of -H's: copy those in
        "    headers = {}",
        "    for k, v in pairs(wrk.headers) do headers[k] = v end",
        '    headers["Content-Type"] = "application/json"',
        "  end",
        "  n = n + 1",
    ]
    if "{id}" in endpoint.path:
        lines.append(f"  local path = {_lua_string(head)} .. ids[math.random(#ids)] .. "
                     f"{_lua_string(tail)}")
    else:
        lines.append(f"  local path = {_lua_string(endpoint.path)}")
    body = endpoint.body or "nil"
    lines += [f"  return wrk.format({_lua_string(endpoint.method)}, path, headers, {body})",
              "end"]
    return "\n".join(lines) + "\n" + REPORT_LUA


def measure(url: str, endpoint: Endpoint, ids: Sequence[str], load: Load,
            headers: dict[str, str], pid: int | None) -> Result:
    """One wrk run against the server at `url` (process `pid`), CPU time read around it."""
    if "{id}" in endpoint.path and not ids:
        raise ValueError(f"{endpoint.path} needs ids")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "load.lua"
        path.write_text(script(endpoint, ids))
        before = cpu_seconds(pid) if pid else 0.0
        done = run_wrk(url, load, path, headers)
        cpu = (cpu_seconds(pid) - before) if pid else 0.0
    return Result(done.rate, done.p50_ms, done.p99_ms, sum(done.errors.values()),
                  cpu * 1000 / max(1, done.requests))
