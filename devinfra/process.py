"""Process plumbing shared by the throwaway servers: free ports, waiting, stopping, log tails.

Every server in devinfra is a plain child process. This module owns how such a process is
launched (own session, dies with its parent, optional unprivileged user), how readiness is
awaited (with the log tail in the error), and how it is stopped (polite signal, then SIGKILL).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devinfra.files import tail

log = logging.getLogger("devinfra")

LOOPBACK = "127.0.0.1"


class DevInfraError(RuntimeError):
    """A local server could not be provided; the message says why and what to look at."""


class StartupTimeoutError(DevInfraError):
    """The server process runs but did not become ready in time."""


class ProcessExitedError(DevInfraError):
    """The server process died while we were waiting for it."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a port that is free right now (the kernel picks it; a small race remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return `count` distinct free ports, holding them all open so none is handed out twice."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on `port` (so a server we start can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when a TCP connect to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class _Credentials:
    """Popen's user/group/extra_groups: run the child as another (unprivileged) OS user."""

    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None

    @classmethod
    def of(cls, user: str | None) -> _Credentials:
        if user is None:
            return cls()
        entry = pwd.getpwnam(user)
        return cls(entry.pw_uid, entry.pw_gid, [])


def _with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    """Prefix argv so the child gets SIGTERM if we die (no orphaned brokers after a crash).

    PR_SET_PDEATHSIG fires when the *thread* that forked exits, so this is only safe when we
    launch from the main thread; other threads launch without it.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return list(argv)
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]


class ManagedProcess:
    """One long-running server process with its output in a file.

    It runs in its own session so a Ctrl-C in the terminal reaches only us, and we stop the
    servers in order. `stop_signal` is the server's "shut down cleanly" signal (PostgreSQL wants
    SIGINT for a fast shutdown, most others SIGTERM).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        output: Path,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        extra_logs: Sequence[Path] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.output = output
        self.env = dict(env) if env is not None else None
        self.user = user
        self.stop_signal = stop_signal
        self.extra_logs = list(extra_logs)
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch the process (again, if it ran before); output is appended to `output`."""
        if self.running:
            raise DevInfraError(f"{self.name} is already running (pid {self.pid})")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        creds = _Credentials.of(self.user)
        with self.output.open("ab") as out:
            self._popen = subprocess.Popen(
                _with_parent_death_signal(self.argv),
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=creds.user,
                group=creds.group,
                extra_groups=creds.extra_groups,
            )
        _live.add(self)

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def stop(self, timeout: float = 30.0) -> int | None:
        """Ask the process to exit; SIGKILL it after `timeout` seconds. Returns its exit code."""
        popen = self._popen
        if popen is None or popen.poll() is not None:
            return self.returncode
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(self.stop_signal)
        try:
            return popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.info("%s did not stop within %.0fs; killing it", self.name, timeout)
            return self.kill()

    def kill(self) -> int | None:
        """SIGKILL the process and its helpers (its whole session): a crash, then reap it."""
        popen = self._popen
        if popen is None:
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)  # start_new_session made pid the group id
        return popen.wait()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the process output and of its own log files, for error messages."""
        parts = [f"--- {path} ---\n{tail(path, lines)}" for path in [self.output, *self.extra_logs]]
        return "\n".join(parts)

    def describe_exit(self) -> str:
        return f"{self.name} exited with code {self.returncode}\n{self.log_tail()}"


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    processes: Sequence[ManagedProcess] = (),
    interval: float = 0.1,
) -> None:
    """Poll `check` until it is true; fail fast if a process dies; show the logs on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in processes:
            if not proc.running:
                raise ProcessExitedError(f"{what}: {proc.describe_exit()}")
        if check():
            return
        if time.monotonic() >= deadline:
            logs = "\n".join(proc.log_tail() for proc in processes)
            raise StartupTimeoutError(f"{what}: not ready after {timeout:.0f}s\n{logs}".rstrip())
        time.sleep(interval)


def run_checked(
    argv: Sequence[str],
    *,
    what: str,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> str:
    """Run a short command to completion; raise DevInfraError with its output if it fails."""
    try:
        creds = _Credentials.of(user)
        result = subprocess.run(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
            user=creds.user,
            group=creds.group,
            extra_groups=creds.extra_groups,
        )
    except subprocess.TimeoutExpired as exc:
        raise DevInfraError(f"{what}: timed out after {timeout:.0f}s: {' '.join(argv)}") from exc
    output: str = result.stdout.decode(errors="replace")
    if result.returncode != 0:
        raise DevInfraError(
            f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n{output[-4000:]}"
        )
    return output


def kill_leftovers() -> None:
    """Stop every process we launched that is still running (interpreter exit safety net)."""
    for proc in list(_live):
        if proc.running:
            proc.stop(timeout=10.0)


def running_as_root() -> bool:
    return os.geteuid() == 0


_live: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()
atexit.register(kill_leftovers)
