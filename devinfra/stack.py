"""`python -m devinfra.stack`: the whole local system as plain processes (what `make up` runs).

`Stack` starts an Apache Kafka broker (or uses one it is given), optionally a PostgreSQL server
with one database per service, then the services in dependency order, each its own process
with its output prefixed and coloured on the console (and kept in `<state>/logs/<name>.log`).
It waits for each service's `/health/ready`, creates the admin user through auth's CLI, and on
`close()` stops the services (SIGTERM, then SIGKILL after a grace period), then the servers it
started. `make up` and the end-to-end tests (tests/e2e) both run the system through it.

The admin's password is generated once and kept in `<state>/admin.txt` (mode 0600): a second
`make up` logs in with it instead of creating another admin.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Literal, Self

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from devinfra.files import tail
from devinfra.kafka import KafkaBroker
from devinfra.postgres import PostgresServer, postgres_bin_dir
from devinfra.process import (
    LOOPBACK,
    DevInfraError,
    ManagedProcess,
    free_ports,
    port_is_free,
    run_checked,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE_DIR = ROOT / ".local"
DEFAULT_ADMIN_EMAIL = "admin@example.com"
JWT_ISSUER = "auth"
JWT_AUDIENCE = "platform"
GATEWAY_PORT = 8000
"""Kept free for the gateway (issue 9); `base_port` offsets every port from it."""

Database = Literal["sqlite", "postgres"]


class StackError(DevInfraError):
    """The stack could not start: the message names the process and shows its last lines."""


class StackInterrupted(StackError):
    """`request_stop()` (Ctrl-C, SIGTERM) arrived while the stack was starting."""


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One process of the stack: `python -m <module>` on `port`, started once every service
    named in `after` is ready."""

    name: str
    module: str
    port: int
    color: str = "white"
    after: tuple[str, ...] = ()
    issuer: bool = False
    """The token issuer: gets `JWT_KEYS_DIR`; every other service gets its `JWKS_URL`."""
    database: bool = True
    admin_cli: str | None = None
    """A module with `create-admin --email E --password-stdin` (the issuer's CLI)."""
    env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str = "/health/ready"
    docs_path: str = "/docs"


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("auth", "services.auth", 8001, "magenta", issuer=True,
                admin_cli="services.auth.cli"),
    # The others only need auth's JWKS to start; driver reaches user by HTTP at request time.
    ServiceSpec("user", "services.user", 8002, "cyan", after=("auth",)),
    ServiceSpec("driver", "services.driver", 8003, "green", after=("auth",)),
    ServiceSpec("notification", "services.notification", 8004, "yellow", after=("auth",)),
    # The gateway (issue 9) joins here, last and on GATEWAY_PORT, e.g.
    # ServiceSpec("gateway", "gateway", GATEWAY_PORT, "blue", database=False,
    #             after=("auth", "user", "driver", "notification")),
)


@dataclass(frozen=True, slots=True)
class AdminLogin:
    """The admin user `make up` made (or found in `file` from an earlier run)."""

    email: str
    password: str
    created: bool
    file: Path

    def curl(self, auth_url: str) -> str:
        body = f'{{"email": "{self.email}", "password": "{self.password}"}}'
        return (f"curl -s -X POST {auth_url}/auth/login "
                f"-H 'content-type: application/json' -d '{body}'")


class ServiceProcess:
    """A service's process, its log file and the thread that echoes new lines, prefixed."""

    def __init__(self, spec: ServiceSpec, port: int, env: Mapping[str, str], log: Path,
                 console: Console) -> None:
        self.spec = spec
        self.port = port
        self.env = dict(env)
        self.log = log
        self._console = console
        self.process = ManagedProcess(spec.name, [sys.executable, "-m", spec.module], cwd=ROOT,
                                      output=log, env={**os.environ, **env})
        self._pump: threading.Thread | None = None
        self._pump_stop = threading.Event()
        self.last_health = ""

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def docs_url(self) -> str:
        return self.url + self.spec.docs_path

    @property
    def running(self) -> bool:
        return self.process.running

    def start(self) -> None:
        """Launch (again, after `kill()` or `stop()`); output is appended to the same log."""
        if self._pump is None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self.log.write_bytes(b"")  # this run's lines only
        self.process.start()
        if self._pump is None:
            self._pump = threading.Thread(target=self._echo, name=f"log-{self.spec.name}",
                                          daemon=True)
            self._pump.start()

    def ready(self) -> bool:
        try:
            response = httpx.get(self.url + self.spec.ready_path, timeout=2.0)
        except httpx.HTTPError as exc:
            self.last_health = f"{type(exc).__name__}: {exc}"
            return False
        self.last_health = f"{response.status_code} {response.text[:500]}"
        return response.status_code == 200

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, SIGKILL after `timeout` seconds; returns the exit code."""
        if self.running:
            self._console.print(f"stopping {self.spec.name} (pid {self.process.pid})")
        return self.process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL, for crash tests; `start()` brings it back on the same port."""
        self.process.kill()

    def tail(self, lines: int = 30) -> str:
        return tail(self.log, lines)

    def close(self) -> None:
        """After the process has ended: echo what is left of the log, then end the thread."""
        self._pump_stop.set()
        if self._pump is not None:
            self._pump.join(timeout=5)

    def _echo(self) -> None:
        prefix = Text(f"{self.spec.name:>12} │ ", style=self.spec.color)
        with self.log.open("rb") as fh:
            partial = b""
            while True:
                chunk = fh.readline()
                if chunk.endswith(b"\n"):
                    line = (partial + chunk).decode(errors="replace").rstrip()
                    partial = b""
                    self._console.print(Text.assemble(prefix, line))
                    continue
                partial += chunk
                if self._pump_stop.is_set():
                    if partial:
                        self._console.print(Text.assemble(prefix, partial.decode(errors="replace")))
                    return
                time.sleep(0.1)


class Stack:
    """Kafka, an optional PostgreSQL, and `services` as processes; a context manager.

    Ports: each spec's own, shifted by `base_port - 8000` when `base_port` is given
    (`base_port=0`: free ports), then overridden by `ports`. A `kafka` broker (or bootstrap
    string) and a `postgres` server that are given are used and left running; the ones the stack
    starts live in `state_dir` and stop with it. `prefix` goes before database and consumer-group
    names, so several stacks can share one broker and one PostgreSQL (the tests do).
    `start()` may be called from one thread while another calls `request_stop()`.
    """

    def __init__(
        self,
        services: Sequence[ServiceSpec] = SERVICES,
        *,
        state_dir: Path = DEFAULT_STATE_DIR,
        db: Database = "sqlite",
        ports: Mapping[str, int] | None = None,
        base_port: int | None = None,
        kafka: KafkaBroker | str | None = None,
        postgres: PostgresServer | None = None,
        redis_url: str | None = None,
        env: Mapping[str, str] | None = None,
        prefix: str = "",
        admin_email: str | None = DEFAULT_ADMIN_EMAIL,
        console: Console | None = None,
        ready_timeout: float = 120.0,
        stop_timeout: float = 20.0,
    ) -> None:
        names = [spec.name for spec in services]
        if len(set(names)) != len(names):
            raise StackError(f"service names repeat: {names}")
        self.services = list(services)
        self.state_dir = Path(state_dir).resolve()
        self.db = db
        self.ports = _ports(self.services, ports, base_port)
        self.redis_url = redis_url
        self.env = dict(env or {})
        self.prefix = prefix
        self.admin_email = admin_email
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.admin: AdminLogin | None = None
        self.processes: dict[str, ServiceProcess] = {}
        self._given_kafka = kafka
        self._given_postgres = postgres
        self._broker: KafkaBroker | None = None
        self._postgres: PostgresServer | None = None
        self._waves: list[list[ServiceSpec]] = _waves(self.services)
        self._stopping = threading.Event()
        self._closed = False

    # --- what the stack offers once started ----------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        given = self._given_kafka
        if isinstance(given, str):
            return given
        broker = given or self._broker
        if broker is None:
            raise StackError("Kafka is not started yet")
        return broker.bootstrap_servers

    @property
    def postgres(self) -> PostgresServer | None:
        return self._given_postgres or self._postgres

    def url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.ports[name]}"

    def database_name(self, name: str) -> str:
        return f"{self.prefix}{name}".replace("-", "_")

    def database_url(self, name: str) -> str:
        if self.db == "sqlite":
            return f"sqlite+aiosqlite:///{self.state_dir / self.database_name(name)}.db"
        server = self.postgres
        if server is None:
            raise StackError("PostgreSQL is not started yet")
        return (f"postgresql+asyncpg://{server.user}@{LOOPBACK}:{server.port}/"
                f"{self.database_name(name)}")

    def service_env(self, spec: ServiceSpec) -> dict[str, str]:
        """The environment `spec`'s process gets (on top of ours)."""
        env = {
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
            "ENVIRONMENT": "development",  # migrates its database at start-up
            "SERVICE_NAME": spec.name,
            "SERVICE_HOST": LOOPBACK,
            "SERVICE_PORT": str(self.ports[spec.name]),
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "KAFKA_CONSUMER_GROUP": f"{self.prefix}{spec.name}",
            "JWT_ISSUER": JWT_ISSUER,
            "JWT_AUDIENCE": JWT_AUDIENCE,
            **self.env,
        }
        if spec.database:
            env["DATABASE_URL"] = self.database_url(spec.name)
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        issuer = next((s for s in self.services if s.issuer), None)
        if spec.issuer:
            env["JWT_KEYS_DIR"] = str(self.keys_dir)
        elif issuer is not None:
            env["JWKS_URL"] = f"{self.url(issuer.name)}/.well-known/jwks.json"
            env["AUTH_TOKEN_URL"] = f"{self.url(issuer.name)}/oauth/token"
        return {**env, **spec.env}

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start everything and wait until every service is ready; on failure, stop what
        started and raise StackError (with the failing process's last log lines)."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def request_stop(self) -> None:
        """Ask a running `start()` or `watch()` to give up and return (signal-handler safe)."""
        self._stopping.set()

    def watch(self, duration: float | None = None) -> int:
        """Supervise until `request_stop()` or `duration` seconds: 0; a service exits: 1."""
        deadline = None if duration is None else time.monotonic() + duration
        while not self._stopping.wait(0.5):
            if deadline is not None and time.monotonic() >= deadline:
                return 0
            for proc in self.processes.values():
                if not proc.running:
                    self.console.print(Text(
                        f"{proc.spec.name} exited with code {proc.process.returncode}; "
                        f"its last lines:\n{proc.tail()}", style="red"))
                    return 1
        return 0

    def kill(self, name: str) -> None:
        """SIGKILL one service (a crash, for tests); `restart(name)` brings it back."""
        self.processes[name].kill()

    def restart(self, name: str) -> None:
        """Stop `name` if it runs (SIGTERM, then SIGKILL), start it again on the same port and
        database, and wait until it is ready."""
        proc = self.processes[name]
        proc.stop(self.stop_timeout)
        proc.start()
        self._wait_ready([proc])

    def close(self) -> None:
        """Stop the services (dependents first; each SIGTERM, then SIGKILL after
        `stop_timeout`), then the PostgreSQL and Kafka this stack started. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for wave in reversed(self._waves):
            procs = [self.processes[s.name] for s in wave if s.name in self.processes]
            if procs:
                with ThreadPoolExecutor(max_workers=len(procs)) as pool:
                    list(pool.map(lambda p: p.stop(self.stop_timeout), procs))
        for proc in self.processes.values():
            proc.close()
        if self._postgres is not None:
            with self.console.status("stopping PostgreSQL..."):
                self._postgres.close()
        if self._broker is not None:
            with self.console.status("stopping Kafka..."):
                self._broker.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- starting ---------------------------------------------------------------------------

    def _start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._check_ports()
        if self._given_kafka is None:
            port = 9092 if port_is_free(9092) else None
            with self.console.status("starting Apache Kafka (KRaft)..."):
                self._broker = KafkaBroker.start(self.state_dir / "kafka", port=port)
        self.console.print(f"[bold]kafka[/] ready at {self.bootstrap_servers}")
        if self.db == "postgres":
            if self._given_postgres is None:
                port = 5432 if port_is_free(5432) else None
                with self.console.status("starting PostgreSQL..."):
                    self._postgres = PostgresServer.start(self.state_dir / "postgres", port=port)
            self._create_databases()
        for wave in self._waves:
            self._check_stopping()
            procs = [self._launch(spec) for spec in wave]
            self._wait_ready(procs)
        if self.admin_email is not None:
            self.admin = self._ensure_admin(self.admin_email)

    def _check_ports(self) -> None:
        busy = [f"{name} ({port})" for name, port in self.ports.items() if not port_is_free(port)]
        if busy:
            raise StackError(f"ports in use: {', '.join(busy)}. Is another stack running? "
                             "Stop it, or pick other ports (--base-port 9000, or 0 for any).")

    def _create_databases(self) -> None:
        server = self.postgres
        assert server is not None
        for spec in self.services:
            if not spec.database:
                continue
            name = self.database_name(spec.name)
            try:
                run_checked([str(postgres_bin_dir() / "createdb"), "-h", LOOPBACK,
                             "-p", str(server.port), "-U", server.user, name],
                            what=f"creating database {name!r}")
            except DevInfraError as exc:
                if "already exists" not in str(exc):  # a kept server keeps its databases
                    raise
        self.console.print(f"[bold]postgresql[/] ready at {LOOPBACK}:{server.port}, databases: "
                           + ", ".join(self.database_name(s.name)
                                       for s in self.services if s.database))

    def _launch(self, spec: ServiceSpec) -> ServiceProcess:
        proc = ServiceProcess(spec, self.ports[spec.name], self.service_env(spec),
                              self.state_dir / "logs" / f"{spec.name}.log", self.console)
        self.processes[spec.name] = proc
        proc.start()
        self.console.print(f"[bold]{spec.name}[/] started (pid {proc.process.pid}, "
                           f"port {proc.port})")
        return proc

    def _wait_ready(self, procs: Iterable[ServiceProcess]) -> None:
        pending = {proc.spec.name: proc for proc in procs}
        started = time.monotonic()
        with self.console.status("") as status:
            while pending:
                for name, proc in list(pending.items()):
                    if not proc.running:
                        raise StackError(
                            f"{name} exited with code {proc.process.returncode} before it was "
                            f"ready. Its last log lines ({proc.log}):\n{proc.tail()}")
                    if proc.ready():
                        del pending[name]
                        self.console.print(f"[bold]{name}[/] ready at {proc.url} "
                                           f"({time.monotonic() - started:.1f}s)")
                if not pending:
                    return
                waited = time.monotonic() - started
                if waited > self.ready_timeout:
                    raise StackError("\n".join(
                        f"{name} not ready after {self.ready_timeout:.0f}s (last "
                        f"{proc.spec.ready_path}: {proc.last_health}). Its last log lines "
                        f"({proc.log}):\n{proc.tail()}" for name, proc in pending.items()))
                status.update(f"waiting for {', '.join(pending)} to be ready ({waited:.0f}s)")
                self._check_stopping(wait=0.25)

    def _check_stopping(self, wait: float = 0.0) -> None:
        if self._stopping.wait(wait):
            raise StackInterrupted("stopped while starting")

    # --- the admin user ---------------------------------------------------------------------

    def _ensure_admin(self, email: str) -> AdminLogin | None:
        """Log in with the kept password; else create the admin with a new one, and keep it.

        A failure here leaves the stack running and says what to do: the services are fine."""
        issuer = next((s for s in self.services if s.issuer and s.admin_cli), None)
        if issuer is None:
            return None
        file = self.state_dir / "admin.txt"
        kept = _read_admin(file)
        if kept is not None and kept.email == email and self._logs_in(issuer, kept):
            return kept
        password = secrets.token_urlsafe(18)
        assert issuer.admin_cli is not None
        result = subprocess.run(
            [sys.executable, "-m", issuer.admin_cli, "create-admin", "--email", email,
             "--password-stdin"],
            input=password + "\n", cwd=ROOT, env={**os.environ, **self.service_env(issuer)},
            capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            self.console.print(Text(
                f"could not create the admin {email} (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr).strip()[-2000:]}\n"
                f"If the admin exists from an earlier run whose {file.name} is gone, start "
                f"from a clean state folder ({self.state_dir}).", style="red"))
            return None
        admin = AdminLogin(email, password, created=True, file=file)
        _write_admin(admin)
        if not self._logs_in(issuer, admin):
            self.console.print(Text(f"the admin {email} was created but cannot log in",
                                    style="red"))
        return admin

    def _logs_in(self, issuer: ServiceSpec, admin: AdminLogin) -> bool:
        try:
            response = httpx.post(f"{self.url(issuer.name)}/auth/login",
                                  json={"email": admin.email, "password": admin.password},
                                  timeout=10.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    # --- the summary ------------------------------------------------------------------------

    def print_summary(self) -> None:
        table = Table(title="the stack is up", title_justify="left")
        for column in ("process", "url", "docs"):
            table.add_column(column)
        if GATEWAY_PORT not in self.ports.values():
            table.add_row("gateway", f"(issue 9: port {GATEWAY_PORT})", "")
        for name, proc in self.processes.items():
            table.add_row(Text(name, style=proc.spec.color), proc.url, proc.docs_url)
        table.add_row("kafka", self.bootstrap_servers, "")
        server = self.postgres
        if self.db == "postgres" and server is not None:
            table.add_row("postgresql", f"{LOOPBACK}:{server.port} (user {server.user}), "
                          f"database {self.database_name('<service>')}", "")
        else:
            table.add_row("sqlite", f"{self.state_dir}/<service>.db", "")
        self.console.print(table)
        self.console.print(f"logs: {self.state_dir / 'logs'}")
        issuer = next((s for s in self.services if s.issuer), None)
        if self.admin is not None and issuer is not None:
            how = "created now" if self.admin.created else "from an earlier run"
            self.console.print(
                f"admin: [bold]{self.admin.email}[/] / [bold]{self.admin.password}[/] "
                f"({how}; kept in {self.admin.file})\nlog in:\n  "
                + self.admin.curl(self.url(issuer.name)), markup=True, soft_wrap=True)
        self.console.print("[dim]Ctrl-C stops everything[/]")


def _ports(services: Sequence[ServiceSpec], ports: Mapping[str, int] | None,
           base_port: int | None) -> dict[str, int]:
    if base_port == 0:
        result = dict(zip([s.name for s in services], free_ports(len(services)), strict=True))
    elif base_port is not None:
        result = {s.name: base_port + s.port - GATEWAY_PORT for s in services}
    else:
        result = {s.name: s.port for s in services}
    result.update(ports or {})
    if len(set(result.values())) != len(result):
        raise StackError(f"two services on one port: {result}")
    return result


def _waves(services: Sequence[ServiceSpec]) -> list[list[ServiceSpec]]:
    """Groups to start one after another: each waits only for services of earlier groups."""
    known = {s.name for s in services}
    done: set[str] = set()
    remaining = list(services)
    waves: list[list[ServiceSpec]] = []
    while remaining:
        wave = [s for s in remaining if set(s.after) & known <= done]
        if not wave:
            raise StackError(f"services wait for each other: {[s.name for s in remaining]}")
        waves.append(wave)
        done |= {s.name for s in wave}
        remaining = [s for s in remaining if s not in wave]
    return waves


def _read_admin(file: Path) -> AdminLogin | None:
    try:
        fields = dict(line.split(": ", 1) for line in file.read_text().splitlines()
                      if ": " in line)
        return AdminLogin(fields["email"], fields["password"], created=False, file=file)
    except (OSError, KeyError):
        return None


def _write_admin(admin: AdminLogin) -> None:
    admin.file.unlink(missing_ok=True)
    fd = os.open(admin.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"email: {admin.email}\npassword: {admin.password}\n")


def _load_services(ref: str) -> Sequence[ServiceSpec]:
    module, _, attr = ref.partition(":")
    specs: Sequence[ServiceSpec] = getattr(importlib.import_module(module), attr or "SERVICES")
    return specs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devinfra.stack",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite",
                        help="sqlite: a file per service in the state folder; postgres: a local "
                             "PostgreSQL, one database per service")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help="databases, keys, logs, Kafka's data and admin.txt (default .local)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--base-port", type=int,
                        help="ports from here (auth at base+1, ...); 0: any free ports")
    parser.add_argument("--kafka", help="use this running broker (bootstrap servers)")
    parser.add_argument("--redis-url", help="REDIS_URL for the services (default: none)")
    parser.add_argument("--admin-email", default=DEFAULT_ADMIN_EMAIL)
    parser.add_argument("--services", default="devinfra.stack:SERVICES",
                        help="module:attribute of the ServiceSpec list to run")
    args = parser.parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    stack = Stack(_load_services(args.services), state_dir=args.state_dir, db=args.db,
                  base_port=args.base_port, kafka=args.kafka, redis_url=args.redis_url,
                  admin_email=args.admin_email, console=console)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stack._stopping.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting politely
        console.print(f"{signal.Signals(signum).name}: stopping (again to hurry)")
        stack.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        stack.start()
        stack.print_summary()
        code = stack.watch(args.duration)
    except StackInterrupted:
        code = 0
    except DevInfraError as exc:
        console.print(Text(str(exc), style="red"))
        code = 1
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            stack.close()
        console.print("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
