"""`python -m devinfra.stack`: the whole local system as plain processes (what `make up` runs).

Starts a local Apache Kafka broker (port 9092 when free), then every process of the stack with
`KAFKA_BOOTSTRAP_SERVERS` pointing at it, each with its own SQLite file where it needs a
database. Output is prefixed with the process name. Ctrl-C (or SIGTERM) stops the processes
gracefully, then the broker. As services and the gateway land, they join `STACK`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from devinfra.kafka import KafkaBroker
from devinfra.process import port_is_free

ROOT = Path(__file__).resolve().parents[1]
console = Console(highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Proc:
    name: str
    module: str
    color: str


STACK = [
    Proc("hello-consumer", "examples.hello.consumer", "green"),
    Proc("hello-publisher", "examples.hello.publisher", "cyan"),
]


def _pump(proc: Proc, child: subprocess.Popen[str]) -> None:
    assert child.stdout is not None
    for line in child.stdout:
        console.print(f"[{proc.color}]{proc.name:>16}[/] | {line.rstrip()}", markup=True)


def run(duration: float | None, state_dir: Path) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    state_dir.mkdir(parents=True, exist_ok=True)
    with console.status("starting Apache Kafka (KRaft)..."):
        broker = KafkaBroker.start(port=9092 if port_is_free(9092) else None)
    console.print(f"[bold]kafka[/] ready at {broker.bootstrap_servers}")
    children: list[tuple[Proc, subprocess.Popen[str]]] = []
    try:
        for proc in STACK:
            env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                   "SERVICE_NAME": proc.name,
                   "DATABASE_URL": f"sqlite+aiosqlite:///{state_dir / proc.name}.db",
                   "PYTHONUNBUFFERED": "1"}
            child = subprocess.Popen([sys.executable, "-m", proc.module], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            threading.Thread(target=_pump, args=(proc, child), daemon=True).start()
            children.append((proc, child))
            console.print(f"[bold]{proc.name}[/] started (pid {child.pid})")
        console.print("[dim]Ctrl-C stops everything[/]")
        deadline = time.monotonic() + duration if duration else None
        while not stop.wait(0.5):
            if deadline and time.monotonic() > deadline:
                break
            for proc, child in children:
                if child.poll() is not None:
                    console.print(f"[red]{proc.name} exited with {child.returncode}[/]")
                    return 1
        return 0
    finally:
        for _, child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for proc, child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                console.print(f"[red]{proc.name} did not stop; killing it[/]")
                child.kill()
        with console.status("stopping kafka..."):
            broker.close()
        console.print("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devinfra.stack", description=__doc__)
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".local",
                        help="where the processes' SQLite files live")
    args = parser.parse_args()
    sys.exit(run(args.duration, args.state_dir))


if __name__ == "__main__":
    main()
