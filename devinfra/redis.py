"""A throwaway Redis server (Debian's redis-server) for development and tests.

Runs on a free loopback port with persistence off (no RDB snapshots, no AOF): the data lives
only as long as the process, which is what a test wants.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import time
from pathlib import Path

from devinfra.files import Workdir
from devinfra.process import (
    LOOPBACK,
    DevInfraError,
    ManagedProcess,
    free_port,
    wait_until,
)
from devinfra.server import LocalServer

__all__ = ["RedisServer", "redis_server_binary"]

REDIS_TIMEOUT = 30.0


def redis_server_binary() -> str:
    """$KFM_REDIS_SERVER, else redis-server on PATH."""
    found = os.environ.get("KFM_REDIS_SERVER") or shutil.which("redis-server")
    if not found:
        raise DevInfraError(
            "redis-server not found (run scripts/bootstrap.sh, or apt-get install redis-server; "
            "or set KFM_REDIS_SERVER)"
        )
    return found


def _answers_ping(port: int) -> bool:
    """A raw RESP PING: ready means the server answers commands, not just accepts TCP."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(LocalServer):
    """One redis-server process. `stop()` ends it (all data is gone: no persistence)."""

    def __init__(self, *, port: int, workdir: Workdir) -> None:
        self.port = port
        self._workdir = workdir
        self.startup_seconds: float | None = None
        self._process = ManagedProcess(
            "redis-server",
            [
                redis_server_binary(),
                "--port",
                str(port),
                "--bind",
                LOOPBACK,
                "--dir",
                str(workdir.path),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",  # log to stdout, which goes to redis.log
                "--loglevel",
                "warning",
            ],
            cwd=workdir.path,
            output=workdir.path / "redis.log",
        )

    @classmethod
    def start(
        cls,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        timeout: float = REDIS_TIMEOUT,
    ) -> RedisServer:
        """Start redis-server and block until it answers PING."""
        started = time.monotonic()
        server = cls(port=port or free_port(), workdir=Workdir.create(workdir, "redis"))
        try:
            server._process.start()
            server._wait_ready(timeout)
        except BaseException:
            server.close()
            raise
        server.startup_seconds = time.monotonic() - started
        return server

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    STOP_TIMEOUT = 10.0

    def restart(self, timeout: float = REDIS_TIMEOUT) -> None:
        """Stop if running and start again, empty, on the same port."""
        self.stop()
        self._process.start()
        self._wait_ready(timeout)

    def __repr__(self) -> str:
        return f"RedisServer({self.url}, {'running' if self.running else 'stopped'})"

    def _wait_ready(self, timeout: float) -> None:
        wait_until(
            functools.partial(_answers_ping, self.port),
            timeout=timeout,
            what=f"Redis on {LOOPBACK}:{self.port}",
            processes=[self._process],
        )
