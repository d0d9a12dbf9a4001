"""Command line for the local servers: `python -m devinfra {fetch,kafka,postgres,redis,up}`.

`make up` and scripts use it; each serving command runs in the foreground until Ctrl-C or
SIGTERM, then stops its servers cleanly and removes the address/env file it wrote.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol

from devinfra.kafka_dist import ensure_kafka, kafka_version
from devinfra.process import DevInfraError, port_is_free

log = logging.getLogger("devinfra")

PREFERRED_PORTS = {"kafka": 9092, "postgres": 5432, "redis": 6379}
ENV_NAMES = {"kafka": "KAFKA_BOOTSTRAP_SERVERS", "postgres": "DATABASE_URL", "redis": "REDIS_URL"}


class Server(Protocol):
    @property
    def running(self) -> bool: ...

    def close(self) -> None: ...

    def log_tail(self, lines: int = 40) -> str: ...


def _pick_port(requested: int | None, name: str) -> int | None:
    """An explicit --port wins (0 = any free port); otherwise the usual port when it is free."""
    if requested is not None:
        if requested and not port_is_free(requested):
            raise DevInfraError(f"port {requested} for {name} is already in use")
        return requested or None
    preferred = PREFERRED_PORTS[name]
    if port_is_free(preferred):
        return preferred
    log.warning("port %d is busy; %s gets a free port instead", preferred, name)
    return None


def _start(name: str, port: int | None, workdir: Path | None) -> tuple[Server, str]:
    """Start one server; return it and the address clients use (bootstrap servers or URL)."""
    if name == "kafka":
        from devinfra.kafka import KafkaBroker

        broker = KafkaBroker.start(workdir, port=port)
        return broker, broker.bootstrap_servers
    if name == "postgres":
        from devinfra.postgres import PostgresServer

        pg = PostgresServer.start(workdir, port=port)
        return pg, pg.url
    if name == "redis":
        from devinfra.redis import RedisServer

        redis = RedisServer.start(workdir, port=port)
        return redis, redis.url
    raise DevInfraError(f"unknown server {name!r}")


def _serve(
    names: Sequence[str],
    *,
    ports: dict[str, int | None],
    workdirs: dict[str, Path],
    write_file: Callable[[dict[str, str]], None] | None,
    remove_file: Callable[[], None] | None,
) -> int:
    """Start the servers, announce their addresses, run until a signal, then stop them all."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started: dict[str, Server] = {}
    try:
        addresses: dict[str, str] = {}
        for name in names:
            if stop.is_set():
                return 130
            log.info("starting %s", name)
            server, address = _start(name, _pick_port(ports.get(name), name), workdirs.get(name))
            started[name] = server
            addresses[name] = address
            log.info("%s ready: %s", name, address)
        if write_file is not None:
            write_file(addresses)
        for name, address in addresses.items():
            print(f"{ENV_NAMES[name]}={address}", flush=True)
        while not stop.wait(0.5):
            for name, server in started.items():
                if not server.running:
                    log.error("%s exited unexpectedly\n%s", name, server.log_tail())
                    return 1
        return 0
    finally:
        if remove_file is not None:
            remove_file()
        for name, server in reversed(started.items()):
            log.info("stopping %s", name)
            server.close()


def _cmd_fetch(args: argparse.Namespace) -> int:
    version = args.kafka_version or kafka_version()
    libs = ensure_kafka(version)
    jars = sorted(libs.glob("*.jar"))
    print(f"Apache Kafka {version}: {len(jars)} jars in {libs}", flush=True)
    return 0


def _cmd_single(args: argparse.Namespace) -> int:
    name: str = args.command
    address_file: Path | None = args.address_file

    def write(addresses: dict[str, str]) -> None:
        if address_file is not None:
            address_file.parent.mkdir(parents=True, exist_ok=True)
            address_file.write_text(addresses[name] + "\n")

    def remove() -> None:
        if address_file is not None:
            address_file.unlink(missing_ok=True)

    return _serve(
        [name],
        ports={name: args.port},
        workdirs={name: args.workdir} if args.workdir else {},
        write_file=write,
        remove_file=remove,
    )


def _cmd_up(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(ENV_NAMES)
    if unknown:
        raise DevInfraError(f"unknown servers: {', '.join(sorted(unknown))}")
    env_file: Path | None = args.env_file

    def write(addresses: dict[str, str]) -> None:
        if env_file is not None:
            env_file.parent.mkdir(parents=True, exist_ok=True)
            lines = [f"{ENV_NAMES[name]}={address}" for name, address in addresses.items()]
            env_file.write_text("\n".join(lines) + "\n")

    def remove() -> None:
        if env_file is not None:
            env_file.unlink(missing_ok=True)

    ports = {"kafka": args.kafka_port, "postgres": args.postgres_port, "redis": args.redis_port}
    workdirs = {name: args.workdir / name for name in names} if args.workdir else {}
    return _serve(names, ports=ports, workdirs=workdirs, write_file=write, remove_file=remove)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devinfra", description="Throwaway local Kafka, PostgreSQL and Redis."
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch", help="resolve and cache the Apache Kafka jars (once)")
    fetch.add_argument("--kafka-version", help=f"default: $KFM_KAFKA_VERSION or {kafka_version()}")
    fetch.set_defaults(func=_cmd_fetch)

    for name in ("kafka", "postgres", "redis"):
        single = sub.add_parser(name, help=f"run one {name} server until Ctrl-C / SIGTERM")
        single.add_argument(
            "--port",
            type=int,
            help=f"client port; 0 = any free port (default: {PREFERRED_PORTS[name]} if free)",
        )
        single.add_argument(
            "--address-file", type=Path, help="write the client address here once ready"
        )
        single.add_argument(
            "--workdir",
            type=Path,
            help="keep data here across runs (default: a temp dir, deleted on exit)",
        )
        single.set_defaults(func=_cmd_single)

    up = sub.add_parser("up", help="run Kafka, PostgreSQL and Redis until Ctrl-C / SIGTERM")
    up.add_argument("--only", default="kafka,postgres,redis", help="comma separated servers")
    up.add_argument("--env-file", type=Path, help="write KAFKA_BOOTSTRAP_SERVERS=... lines here")
    up.add_argument("--workdir", type=Path, help="keep data in <workdir>/<server> across runs")
    up.add_argument("--kafka-port", type=int, help="default: 9092 if free")
    up.add_argument("--postgres-port", type=int, help="default: 5432 if free")
    up.add_argument("--redis-port", type=int, help="default: 6379 if free")
    up.set_defaults(func=_cmd_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="devinfra: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except DevInfraError as exc:
        log.error("%s", exc)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
