"""One service of the stack as a process: its log file, echoed with a coloured prefix."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
from rich.console import Console
from rich.text import Text

from devinfra.files import tail
from devinfra.process import LOOPBACK, ManagedProcess
from devinfra.stack.specs import ROOT, ServiceSpec


def echo(log: Path, console: Console, prefix: Callable[[str], Text],
         stop: threading.Event) -> None:
    """Follow `log`, printing each whole line under `prefix(line)`, until `stop` is set and
    the file is read to its end (a last line without its newline is printed too)."""
    with log.open("rb") as fh:
        partial = b""
        while True:
            chunk = fh.readline()
            if chunk.endswith(b"\n"):
                line = (partial + chunk).decode(errors="replace").rstrip()
                partial = b""
                console.print(Text.assemble(prefix(line), line))
                continue
            partial += chunk
            if stop.is_set():
                if partial:
                    text = partial.decode(errors="replace")
                    console.print(Text.assemble(prefix(text), text))
                return
            time.sleep(0.1)


class Reachable:
    """A service the stack reaches over HTTP on loopback: its URLs and its readiness (the
    reason it is not ready kept in `last_health` for the stack's error message)."""

    spec: ServiceSpec
    port: int
    last_health: str

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def docs_url(self) -> str:
        return self.url + self.spec.docs_path

    def ready(self) -> bool:
        try:
            response = httpx.get(self.url + self.spec.ready_path, timeout=2.0)
        except httpx.HTTPError as exc:
            self.last_health = f"{type(exc).__name__}: {exc}"
            return False
        self.last_health = f"{response.status_code} {response.text[:500]}"
        return response.status_code == 200


class ServiceProcess(Reachable):
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
        echo(self.log, self._console, lambda _: prefix, self._pump_stop)
