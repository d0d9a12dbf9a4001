"""`Stack`: Kafka, an optional PostgreSQL and the services, started, watched and stopped."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from devinfra.files import tail
from devinfra.kafka import KafkaBroker
from devinfra.postgres import PostgresServer, postgres_bin_dir
from devinfra.process import LOOPBACK, DevInfraError, port_is_free, run_checked
from devinfra.prometheus import PrometheusServer
from devinfra.stack.monolith import (
    BUSES,
    MEMORY_BUS,
    MEMORY_BUS_NEEDS_MONOLITH,
    MEMORY_BUS_NOT_DURABLE,
    MonolithMember,
    MonolithProcess,
    write_plan,
)
from devinfra.stack.process import ServiceProcess
from devinfra.stack.specs import (
    DEFAULT_ADMIN_EMAIL,
    DEFAULT_STATE_DIR,
    JWT_AUDIENCE,
    JWT_ISSUER,
    ROOT,
    SERVICES,
    AdminLogin,
    Database,
    Mode,
    ServiceSpec,
    StackError,
    StackInterruptedError,
    port_map,
    read_admin,
    start_order,
    write_admin,
)

LOOPBACK_NETWORKS = "127.0.0.0/8,::1"


def create_secret_file(path: Path) -> None:
    """Write a fresh random key to `path`, readable by this user only, unless it exists (a
    restarted stack keeps its key, so processes left running still trust each other)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(32) + "\n")


class Stack:
    """Kafka, an optional PostgreSQL, and `services` as processes; a context manager.

    Ports: each spec's own, shifted by `base_port - 8000` when `base_port` is given
    (`base_port=0`: free ports), then overridden by `ports`. A `kafka` broker (or bootstrap
    string) and a `postgres` server that are given are used and left running; the ones the stack
    starts live in `state_dir` and stop with it. `observability=True` also runs Prometheus
    (devinfra.prometheus, in `state_dir`/prometheus, its data anew each run) scraping every
    process, started before them. `prefix` goes before database and consumer-group
    names, so several stacks can share one broker and one PostgreSQL (the tests do).
    `start()` may be called from one thread while another calls `request_stop()`.

    `mode="monolith"` runs every service in one process instead (devinfra.stack.inprocess),
    each with the environment, port and database its own process would have; `processes`
    then holds each service's view of that process (stopping or killing one stops all).
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
        observability: bool = False,
        mode: Mode = "processes",
        bus: str = "kafka",
    ) -> None:
        if bus not in BUSES:
            raise StackError(f"bus {bus!r}: one of {', '.join(BUSES)}")
        if bus == "memory":  # no broker to start: the one process holds it
            if mode != "monolith":
                raise StackError(MEMORY_BUS_NEEDS_MONOLITH)
            if kafka is not None:
                raise StackError("BUS=memory runs no Kafka: do not give a broker too")
            kafka = MEMORY_BUS
        names = [spec.name for spec in services]
        if len(set(names)) != len(names):
            raise StackError(f"service names repeat: {names}")
        self.services = list(services)
        self.state_dir = Path(state_dir).resolve()
        self.db = db
        self.ports = port_map(self.services, ports, base_port)
        self.redis_url = redis_url
        self.env = dict(env or {})
        self.prefix = prefix
        self.admin_email = admin_email
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.admin: AdminLogin | None = None
        self.processes: dict[str, ServiceProcess | MonolithMember] = {}
        self.mode = mode
        self.bus = bus
        self.monolith: MonolithProcess | None = None
        self._given_kafka = kafka
        self._given_postgres = postgres
        self._broker: KafkaBroker | None = None
        self._postgres: PostgresServer | None = None
        self.observability = observability
        self._base_port = base_port
        self.prometheus: PrometheusServer | None = None
        self._waves: list[list[ServiceSpec]] = start_order(self.services)
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

    def metrics_targets(self) -> dict[str, list[str]]:
        """{service: [host:port]}: what Prometheus scrapes (each process's /metrics)."""
        return {name: [f"{LOOPBACK}:{port}"] for name, port in self.ports.items()}

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
            # Registry records are signed with this key and refused without it; instances
            # are only believed on the address the stack binds them to.
            "REGISTRY_SIGNING_KEY_FILE": str(self.registry_key_file),
            "REGISTRY_ALLOWED_NETWORKS": LOOPBACK_NETWORKS,
            # Every process appends its spans here: `python -m core traces show TRACE_ID
            # --file <state>/traces.jsonl` prints one trace as a tree.
            "OTEL_TRACES_FILE": str(self.traces_file),
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
    def traces_file(self) -> Path:
        """The JSON-lines file the stack's processes write their spans to."""
        return self.state_dir / "traces.jsonl"

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def registry_key_file(self) -> Path:
        """The key the stack's processes sign registry records with (0600, made at start)."""
        return self.state_dir / "registry.key"

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
            if self.monolith is not None and not self.monolith.running:
                self.console.print(Text(
                    f"the monolith exited with code {self.monolith.process.returncode}; its "
                    f"last lines:\n{tail(self.monolith.log, 30)}", style="red"))
                return 1
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
        if self.monolith is not None:
            raise StackError(f"{name} runs in one process with the others: restart the stack")
        proc = self.processes[name]
        proc.stop(self.stop_timeout)
        proc.start()
        self._wait_ready([proc])

    def close(self) -> None:
        """Stop Prometheus, the services (dependents first; each SIGTERM, then SIGKILL after
        `stop_timeout`), then the PostgreSQL and Kafka this stack started. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.prometheus is not None:
            self.prometheus.close()
        if self.monolith is not None:  # it stops its services in this order itself
            self.monolith.stop(self.stop_timeout * len(self._waves))
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
        create_secret_file(self.registry_key_file)
        self._checkport_map()
        if self._given_kafka is None:
            port = 9092 if port_is_free(9092) else None
            with self.console.status("starting Apache Kafka (KRaft)..."):
                self._broker = KafkaBroker.start(self.state_dir / "kafka", port=port)
        if self.bus == "memory":
            self.console.print(f"[bold]{MEMORY_BUS_NOT_DURABLE}[/]")
        else:
            self.console.print(f"[bold]kafka[/] ready at {self.bootstrap_servers}")
        if self.db == "postgres":
            if self._given_postgres is None:
                port = 5432 if port_is_free(5432) else None
                with self.console.status("starting PostgreSQL..."):
                    self._postgres = PostgresServer.start(self.state_dir / "postgres", port=port)
            self._create_databases()
        if self.observability:  # before the services: it sees them come up
            self._start_prometheus()
        if self.mode == "monolith":
            self._start_monolith()
        for wave in self._waves:
            self._check_stopping()
            procs = ([self.processes[spec.name] for spec in wave] if self.monolith is not None
                     else [self._launch(spec) for spec in wave])
            self._wait_ready(procs)
        if self.admin_email is not None:
            self.admin = self._ensure_admin(self.admin_email)

    def _start_prometheus(self) -> None:
        workdir = self.state_dir / "prometheus"
        shutil.rmtree(workdir / "data", ignore_errors=True)  # a run's series are its own
        port = 9090 if self._base_port is None and port_is_free(9090) else None
        with self.console.status("starting Prometheus..."):
            self.prometheus = PrometheusServer.start(workdir, targets=self.metrics_targets(),
                                                     port=port)
        self.console.print(f"[bold]prometheus[/] ready at {self.prometheus.url}, scraping "
                           f"{len(self.ports)} processes (targets: "
                           f"{self.prometheus.targets_file})")

    def _checkport_map(self) -> None:
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

    def _start_monolith(self) -> None:
        """One process for every service, started once; the waves' readiness is then waited
        for as the processes' is (it starts them in the same order)."""
        envs = {spec.name: {
            # One tracer provider per process: its spans name the process, not whichever
            # service happened to start first.
            "OTEL_SERVICE_NAME": "monolith", **self.service_env(spec)} for spec in self.services}
        plan = self.state_dir / "monolith.json"
        write_plan(plan, self._waves, self.ports, envs, bus=self.bus,
                   ready_timeout=self.ready_timeout)
        self.monolith = MonolithProcess(
            plan, {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **self.env},
            self.state_dir / "logs" / "monolith.log", self.console,
            {spec.name: spec.color for spec in self.services})
        for spec in self.services:
            self.processes[spec.name] = MonolithMember(spec, self.ports[spec.name],
                                                       envs[spec.name], self.monolith)
        self.monolith.start()
        self.console.print(f"[bold]monolith[/] started (pid {self.monolith.process.pid}): "
                           + ", ".join(f"{name} on {port}" for name, port in self.ports.items())
                           + f", one process, bus: {self.bus}")

    def _launch(self, spec: ServiceSpec) -> ServiceProcess:
        proc = ServiceProcess(spec, self.ports[spec.name], self.service_env(spec),
                              self.state_dir / "logs" / f"{spec.name}.log", self.console)
        self.processes[spec.name] = proc
        proc.start()
        self.console.print(f"[bold]{spec.name}[/] started (pid {proc.process.pid}, "
                           f"port {proc.port})")
        return proc

    def _wait_ready(self, procs: Iterable[ServiceProcess | MonolithMember]) -> None:
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
            raise StackInterruptedError("stopped while starting")

    # --- the admin user ---------------------------------------------------------------------

    def _ensure_admin(self, email: str) -> AdminLogin | None:
        """Log in with the kept password; else create the admin with a new one, and keep it.

        A failure here leaves the stack running and says what to do: the services are fine."""
        issuer = next((s for s in self.services if s.issuer and s.admin_cli), None)
        if issuer is None:
            return None
        file = self.state_dir / "admin.txt"
        kept = read_admin(file)
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
        write_admin(admin)
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
        for name, proc in self.processes.items():
            table.add_row(Text(name, style=proc.spec.color), proc.url, proc.docs_url)
        table.add_row("kafka" if self.bus == "kafka" else "bus (in memory)",
                      self.bootstrap_servers, "")
        if self.prometheus is not None:
            table.add_row("prometheus", self.prometheus.url, self.prometheus.url + "/targets")
        server = self.postgres
        if self.db == "postgres" and server is not None:
            table.add_row("postgresql", f"{LOOPBACK}:{server.port} (user {server.user}), "
                          f"database {self.database_name('<service>')}", "")
        else:
            table.add_row("sqlite", f"{self.state_dir}/<service>.db", "")
        self.console.print(table)
        self.console.print(f"logs: {self.state_dir / 'logs'}")
        if self.monolith is not None:
            self.console.print(f"[bold]one process[/] (pid {self.monolith.process.pid}) runs "
                               f"them all on one event loop (docs/monolith.md)", markup=True)
        issuer = next((s for s in self.services if s.issuer), None)
        gateway = "gateway" in self.ports
        if gateway:
            self.console.print(
                f"[bold]the gateway: {self.url('gateway')}[/] (clients call /api/...; "
                f"docs of the whole API at {self.url('gateway')}/docs)", markup=True)
        if self.admin is not None and issuer is not None:
            how = "created now" if self.admin.created else "from an earlier run"
            login = (f"{self.url('gateway')}/api/auth/login" if gateway
                     else f"{self.url(issuer.name)}/auth/login")
            self.console.print(
                f"admin: [bold]{self.admin.email}[/] / [bold]{self.admin.password}[/] "
                f"({how}; kept in {self.admin.file})\nlog in:\n  "
                + self.admin.curl(login), markup=True, soft_wrap=True)
        self.console.print("[dim]Ctrl-C stops everything[/]")
