"""The processes `bench.gateway` measures: the upstream, nginx, the stand-in proxy under
uvicorn or granian, and the gateway itself; each a real process on a free loopback port.

Every contender answers `GET /api/ping` by calling the one upstream, and every request
carries the same bearer token (the gateway checks it; the others pass it along), so the
requests on the wire are identical and only what stands between wrk and the upstream differs.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import jwt

from bench.common.paths import ROOT
from core.security import ACCESS_TOKEN_TYPE
from core.security.keys import SigningKey
from devinfra.process import ManagedProcess, free_port, wait_until

PATH = "/api/ping"
ISSUER, AUDIENCE, PERMISSION = "https://auth.bench", "platform", "bench:read"
NGINX_WORKERS = 1
"""nginx's worker_processes. One: nginx at one worker is nowhere near its own limit here
(the Python upstream is), and `auto` would start 2 workers on 2 cores only to compete with
wrk and the upstream; the gateway's own worker count is what is being chosen."""
READY_SECONDS = 90.0
"""A gateway of 2 workers on a machine at load 10 took over 30 s to come up."""


@dataclass
class Running:
    """One contender, up: where wrk sends its requests, and what to stop afterwards."""

    key: str
    label: str
    notes: str
    url: str
    processes: list[ManagedProcess] = field(default_factory=list)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(timeout=10.0)


@dataclass(frozen=True, slots=True)
class Credentials:
    """The key the upstream publishes as its JWKS, and the token every request carries."""

    jwks: dict[str, object]
    token: str

    @classmethod
    def make(cls) -> Credentials:
        now = int(time.time())
        key = SigningKey.generate("EdDSA", now=now)
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-user", "iat": now,
                  "nbf": now, "exp": now + 6 * 3600, "jti": "bench", "kind": "user",
                  "roles": ["driver"], "permissions": [PERMISSION]}
        token = jwt.encode(claims, key.private_key, algorithm=key.alg,
                           headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE})
        return cls({"keys": [key.public_jwk]}, token)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _process(name: str, argv: list[str], workdir: Path,
             env: dict[str, str | None], root: Path = ROOT) -> ManagedProcess:
    """Run from its own empty directory (no stray `.env` is read), the checkout `root`
    importable; a None in `env` removes that variable."""
    here = workdir / name
    here.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"}
    for name_, value in env.items():
        if value is None:
            full.pop(name_, None)
        else:
            full[name_] = value
    process = ManagedProcess(name, argv, cwd=here, output=here / "output.log", env=full)
    process.start()
    return process


def wait_ready(running: Running, headers: dict[str, str],
               timeout: float = READY_SECONDS) -> Running:
    """Up when `GET /api/ping` through it answers 200 (which also warms the gateway's JWKS)."""
    def answers() -> bool:
        request = urllib.request.Request(running.url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    try:
        wait_until(answers, timeout=timeout, what=running.label,
                   processes=running.processes)
    except BaseException:
        running.stop()
        raise
    return running


def _uvicorn(target: str, port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
            "--log-level", "warning", "--no-access-log", "--backlog", "4096"]


def _granian(target: str, port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--no-ws",
            "--log-level", "warning", "--backlog", "4096", target]


SERVERS = {"uvicorn": _uvicorn, "granian": _granian}


def start_upstream(workdir: Path, credentials: Credentials) -> Running:
    jwks_file = workdir / "jwks.json"
    jwks_file.write_text(json.dumps(credentials.jwks))
    port = free_port()
    process = _process("upstream", _uvicorn("bench.gateway.upstream:app", port, 1), workdir,
                       {"BENCH_JWKS_FILE": str(jwks_file)})
    running = Running("direct", "direct", "wrk → upstream (uvicorn, uvloop, httptools, 1 "
                      "worker, raw ASGI)", f"http://127.0.0.1:{port}{PATH}", [process])
    return wait_ready(running, credentials.headers)


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError("nginx not found: run scripts/bootstrap.sh "
                           "(or apt-get install nginx-light)")
    return found


def nginx_conf(directory: Path, port: int, upstream_port: int) -> str:
    """A plain reverse proxy with a keep-alive pool to the upstream; every path the package
    would use (pid, logs, temp files) points into `directory`."""
    d = directory
    return f"""daemon off;
worker_processes {NGINX_WORKERS};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(workdir: Path, upstream_port: int) -> Running:
    """Started, not yet ready: see `wait_ready` (so several start at once)."""
    here = workdir / "nginx"
    here.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (here / "nginx.conf").write_text(nginx_conf(here, port, upstream_port))
    process = _process("nginx", [nginx_binary(), "-p", str(here), "-c", str(here / "nginx.conf"),
                                 "-e", str(here / "error.log")], workdir, {})
    running = Running("nginx", "nginx", f"nginx {_nginx_version()}, worker_processes "
                      f"{NGINX_WORKERS}, upstream keepalive 64, HTTP/1.1, access_log off",
                      f"http://127.0.0.1:{port}{PATH}", [process])
    return running


def _nginx_version() -> str:
    import subprocess

    out = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, check=False)
    return out.stderr.strip().removeprefix("nginx version: nginx/")


def start_standin(workdir: Path, key: str, server: str, workers: int, client: str,
                  upstream_url: str) -> Running:
    port = free_port()
    argv = SERVERS[server]("bench.gateway.standin:app", port, workers)
    process = _process(key, argv, workdir,
                       {"BENCH_UPSTREAM_URL": upstream_url, "BENCH_CLIENT": client})
    running = Running(key, f"{server} {workers}w {client}",
                      f"stand-in proxy (bench/gateway/standin.py) under {server}, {workers} "
                      f"worker(s), upstream client {client}", f"http://127.0.0.1:{port}{PATH}",
                      [process])
    return running


def gateway_missing() -> str | None:
    """Why `python -m gateway` cannot run from this checkout, or None when it can."""
    if importlib.util.find_spec("gateway.app") is None:
        return "gateway/app.py is not there yet"
    try:
        importlib.import_module("gateway.app")
    except ImportError as exc:
        return f"gateway.app does not import yet ({exc})"
    return None


def routes_toml() -> str:
    """One protected route, its permission checked, its path rewritten (to itself: the
    rewrite runs, the upstream sees the same path as everyone else's), its rate limit so
    high it never refuses but is still counted on every request."""
    return f"""[defaults]
timeout = 10.0
retries = 0
rate_limit = "none"

[[routes]]
name = "bench-ping"
prefix = "{PATH}"
service = "bench-upstream"
rewrite = "{PATH}"
methods = ["GET"]
public = false
permissions = ["{PERMISSION}"]
rate_limit = "1000000000/60"
"""


def start_gateway(workdir: Path, key: str, workers: int, upstream_base: str,
                  redis_url: str | None, client: str = "h1",
                  profile: Path | None = None, root: Path | None = None) -> Running:
    """`profile`: run under cProfile, which writes there when the gateway exits (1 worker:
    with more, the profiled process is only the supervisor). `root`: another checkout's
    gateway (its own `.venv`), to compare two versions of the code in one run."""
    here = workdir / key
    here.mkdir(parents=True, exist_ok=True)
    (here / "routes.toml").write_text(routes_toml())
    port = free_port()
    env: dict[str, str | None] = {"SERVICE_PORT": str(port), "SERVICE_HOST": "127.0.0.1",
           "GATEWAY_ROUTES_FILE": str(here / "routes.toml"), "GATEWAY_WORKERS": str(workers),
           "REGISTRY_BACKEND": "static", "REGISTRY_STATIC": f"bench-upstream={upstream_base}",
           "JWKS_URL": f"{upstream_base}/.well-known/jwks.json", "JWT_ISSUER": ISSUER,
           "JWT_AUDIENCE": AUDIENCE, "LOG_LEVEL": "WARNING", "ENVIRONMENT": "development",
           "REDIS_URL": redis_url,  # None: never one inherited from the caller's environment
           "GATEWAY_UPSTREAM_CLIENT": client}
    command = (["-m", "gateway"] if profile is None
               else ["-m", "bench.gateway.profiled", str(profile)])
    python = sys.executable if root is None else str(root / ".venv" / "bin" / "python")
    process = _process(key, [python, *command], workdir, env, root or ROOT)
    limiter = "Redis-shared" if redis_url else "in-process"
    label = ("gateway+redis" if redis_url else "gateway") + (
        f" ({client})" if client != "h1" else "") + (f" ({root.name})" if root else "")
    running = Running(key, label,
                      f"python -m gateway, GATEWAY_WORKERS={workers}, token verified, "
                      f"permission checked, {limiter} rate limit, {client} upstream client"
                      + (f", the code of {root}" if root else ""),
                      f"http://127.0.0.1:{port}{PATH}", [process])
    return running


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(roots: list[int]) -> float:
    """CPU time (user + system) used so far by the processes `roots` and all their
    descendants (server workers, nginx's workers), from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
    wanted = set(roots)
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in wanted} - wanted
        wanted |= more
        grew = bool(more)
    return sum(times.get(pid, 0.0) for pid in wanted)


def settle(roots: list[int], timeout: float = 10.0, idle: float = 0.1) -> float:
    """Wait until the processes `roots` (and their descendants) use less than `idle` of a
    core, so work left over from one measurement (requests wrk gave up on, still being
    proxied) does not fall into the next. Returns the seconds waited."""
    started = time.monotonic()
    window = 0.3  # /proc counts in ticks of 10 ms
    while time.monotonic() - started < timeout:
        before = cpu_seconds(roots)
        time.sleep(window)
        if cpu_seconds(roots) - before < idle * window:
            break
    return time.monotonic() - started
