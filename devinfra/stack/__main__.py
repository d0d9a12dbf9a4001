"""`python -m devinfra.stack`: what `make up` runs (`--help` for the options)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.text import Text

from devinfra.process import DevInfraError
from devinfra.stack import __doc__ as STACK_DOC
from devinfra.stack.launcher import Stack
from devinfra.stack.specs import (
    DEFAULT_ADMIN_EMAIL,
    DEFAULT_STATE_DIR,
    ServiceSpec,
    StackInterruptedError,
)


def _load_services(ref: str) -> Sequence[ServiceSpec]:
    module, _, attr = ref.partition(":")
    specs: Sequence[ServiceSpec] = getattr(importlib.import_module(module), attr or "SERVICES")
    return specs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devinfra.stack",
                                     description=(STACK_DOC or "").split("\n\n")[0])
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
    parser.add_argument("--observability", action="store_true",
                        help="also run Prometheus (Debian's) on deploy/observability's config, "
                             "scraping every process")
    parser.add_argument("--mode", choices=["processes", "monolith"], default="processes",
                        help="processes: each service its own process; monolith: every service "
                             "in one process on one event loop (docs/monolith.md)")
    parser.add_argument("--bus", choices=["kafka", "memory"], default="kafka",
                        help="monolith only: the services' bus (memory: an in-process "
                             "broker, no Java, nothing kept across restarts)")
    parser.add_argument("--services", default="devinfra.stack:SERVICES",
                        help="module:attribute of the ServiceSpec list to run")
    args = parser.parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    try:
        stack = Stack(_load_services(args.services), state_dir=args.state_dir, db=args.db,
                      base_port=args.base_port, kafka=args.kafka, redis_url=args.redis_url,
                      admin_email=args.admin_email, console=console,
                      observability=args.observability, mode=args.mode, bus=args.bus)
    except DevInfraError as exc:  # refused before anything started (a bus, the manifest)
        console.print(Text(str(exc), style="red"))
        return 2

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
    except StackInterruptedError:
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
