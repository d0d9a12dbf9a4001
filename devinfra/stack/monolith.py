"""The stack in one process (`make up MODE=monolith`): the process, and each service's view.

The stack writes a plan (each service's module, port and the environment its own process would
get, in start waves) and starts `python -m devinfra.stack.inprocess PLAN` once; each service
is then a `MonolithMember` over that one process, with its own URL and readiness, so the
stack waits for, prints and stops them as it does processes. Its log is JSON lines (a file):
each is echoed under the name of the service it names, as the processes' are.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.text import Text

from devinfra.files import tail
from devinfra.process import ManagedProcess
from devinfra.stack.process import Reachable, echo
from devinfra.stack.specs import ROOT, ServiceSpec

NAME = "monolith"
BUSES = ("kafka", "memory")
MEMORY_BUS = "memory://monolith"
"""`KAFKA_BOOTSTRAP_SERVERS` of every service with `BUS=memory`: the in-process broker
(`core.messaging.memory_broker`) they share, which lives and dies with the one process."""
MEMORY_BUS_NOT_DURABLE = (
    "bus: in memory (memory://monolith), this process only: nothing is durable, stopping it "
    "loses every event, consumer group and offset (the databases are kept)")
MEMORY_BUS_NEEDS_MONOLITH = (
    "BUS=memory needs MODE=monolith: the in-memory broker lives inside one process, so only "
    "services running in that process can share it")


def write_plan(path: Path, waves: Sequence[Sequence[ServiceSpec]], ports: Mapping[str, int],
               envs: Mapping[str, Mapping[str, str]], *, bus: str,
               ready_timeout: float) -> None:
    """The plan `devinfra.stack.inprocess` runs; 0600 (it names the key files)."""
    plan = {"bus": bus, "ready_timeout": ready_timeout, "waves": [
        [{"name": s.name, "module": s.module, "port": ports[s.name], "env": dict(envs[s.name]),
          "ready_path": s.ready_path} for s in wave] for wave in waves]}
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(plan, fh, indent=1)


class MonolithProcess:
    """The one process, its log, and the thread echoing the log under each line's service."""

    def __init__(self, plan: Path, env: Mapping[str, str], log: Path, console: Console,
                 colors: Mapping[str, str]) -> None:
        self.log = log
        self._console = console
        self._colors = dict(colors)
        self.process = ManagedProcess(NAME, [sys.executable, "-m", "devinfra.stack.inprocess",
                                             str(plan)], cwd=ROOT, output=log,
                                      env={**os.environ, **env})
        self._pump: threading.Thread | None = None
        self._pump_stop = threading.Event()

    @property
    def running(self) -> bool:
        return self.process.running

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_bytes(b"")
        self.process.start()
        self._pump = threading.Thread(target=self._echo, name="log-monolith", daemon=True)
        self._pump.start()

    def stop(self, timeout: float) -> int | None:
        if self.running:
            self._console.print(f"stopping the {NAME} (pid {self.process.pid})")
        return self.process.stop(timeout)

    def close(self) -> None:
        self._pump_stop.set()
        if self._pump is not None:
            self._pump.join(timeout=5)
            self._pump = None

    def _prefix(self, line: str) -> Text:
        service = NAME
        if line.startswith("{"):
            try:
                service = str(json.loads(line).get("service") or NAME)
            except ValueError:
                pass
        return Text(f"{service:>12} │ ", style=self._colors.get(service, "white"))

    def _echo(self) -> None:
        echo(self.log, self._console, self._prefix, self._pump_stop)


class MonolithMember(Reachable):
    """One service inside the monolith, as the stack handles a service's process: its URL,
    readiness and log; stopping or killing it stops the whole process (they are one)."""

    def __init__(self, spec: ServiceSpec, port: int, env: Mapping[str, str],
                 owner: MonolithProcess) -> None:
        self.spec = spec
        self.port = port
        self.env = dict(env)
        self.owner = owner
        self.last_health = ""

    @property
    def process(self) -> ManagedProcess:
        return self.owner.process

    @property
    def log(self) -> Path:
        return self.owner.log

    @property
    def running(self) -> bool:
        return self.owner.running

    def start(self) -> None:
        if not self.owner.running:
            self.owner.start()

    def stop(self, timeout: float) -> int | None:
        return self.owner.stop(timeout)

    def kill(self) -> None:
        self.owner.process.kill()

    def tail(self, lines: int = 30) -> str:
        return tail(self.owner.log, lines)

    def close(self) -> None:
        self.owner.close()
