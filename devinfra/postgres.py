"""A throwaway PostgreSQL server (Debian's packaged binaries) for development and tests.

initdb into a work directory, then `postgres` on a free loopback port and a private unix socket
directory, with fsync and full_page_writes off because the data is disposable (a killed server
still keeps every acknowledged commit; only an OS crash could lose some). Authentication is
`trust`: nothing but local test clients reach it.

PostgreSQL refuses to run as root. When we are root, initdb and the server run as the OS user
`postgres` (created by the Debian package; override with $KFM_PG_OS_USER) and the work
directory is chown'ed to it, so it must live where that user can reach it (a fresh temp dir
under /tmp does; a directory under /root does not).
"""

from __future__ import annotations

import functools
import os
import pwd
import re
import shutil
import signal
import time
from pathlib import Path

from devinfra.files import Workdir
from devinfra.process import (
    LOOPBACK,
    DevInfraError,
    ManagedProcess,
    free_port,
    port_accepts,
    run_checked,
    running_as_root,
    wait_until,
)
from devinfra.server import LocalServer

__all__ = ["PostgresServer", "postgres_bin_dir"]

POSTGRES_TIMEOUT = 60.0
DEFAULT_USER = "kfm"
DEFAULT_DATABASE = "kfm"
# Speed over durability against *machine* crashes only (fsync, full_page_writes): a commit still
# reaches the OS before it is acknowledged, so killing the server loses nothing committed, as
# crash tests expect. Small enough for a 2-core CI machine running many services.
SERVER_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_min_error_statement": "error",
}


def postgres_bin_dir() -> Path:
    """$KFM_PG_BIN, else the newest /usr/lib/postgresql/<major>/bin, else initdb on PATH."""
    configured = os.environ.get("KFM_PG_BIN")
    if configured:
        return Path(configured)
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()]
    if candidates:
        return max(candidates, key=lambda p: _version_key(p.parent.name))
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).parent
    raise DevInfraError(
        "PostgreSQL server binaries not found (run scripts/bootstrap.sh, "
        "or apt-get install postgresql; or set KFM_PG_BIN)"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def _os_user() -> str | None:
    """The unprivileged OS user to run as when we are root; None means 'as ourselves'."""
    if not running_as_root():
        return None
    user = os.environ.get("KFM_PG_OS_USER", "postgres")
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise DevInfraError(
            f"running as root, PostgreSQL must run as an unprivileged user, but OS user "
            f"{user!r} does not exist (apt-get install postgresql creates 'postgres'; "
            f"or set KFM_PG_OS_USER)"
        ) from None
    return user


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


class PostgresServer(LocalServer):
    """One PostgreSQL server with one database, reachable over TCP on 127.0.0.1.

    `stop()` ends the server but keeps its data (`restart()` brings it back on the same port);
    `close()` also deletes a temp workdir we created.
    """

    def __init__(self, *, port: int, workdir: Workdir, user: str, database: str) -> None:
        self.port = port
        self.user = user
        self.database = database
        self._workdir = workdir
        self._bin = postgres_bin_dir()
        self._os_user = _os_user()
        self.startup_seconds: float | None = None
        settings = {
            **SERVER_SETTINGS,
            "listen_addresses": LOOPBACK,
            "unix_socket_directories": str(self.socket_dir),
        }
        self._process = ManagedProcess(
            "postgres",
            [
                str(self._bin / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(port),
                *[arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")],
            ],
            cwd=workdir.path,
            output=workdir.path / "postgres.log",
            user=self._os_user,
            stop_signal=signal.SIGINT,  # "fast" shutdown: does not wait for clients to leave
        )

    @classmethod
    def start(
        cls,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        user: str = DEFAULT_USER,
        database: str = DEFAULT_DATABASE,
        timeout: float = POSTGRES_TIMEOUT,
    ) -> PostgresServer:
        """initdb (unless `workdir` already holds a cluster), start, create `database`."""
        started = time.monotonic()
        server = cls(
            port=port or free_port(),
            workdir=Workdir.create(workdir, "postgres"),
            user=user,
            database=database,
        )
        try:
            server._initdb()
            server._process.start()
            server._wait_ready(timeout)
            server._create_database()
        except BaseException:
            server.close()
            raise
        server.startup_seconds = time.monotonic() - started
        return server

    @property
    def url(self) -> str:
        """SQLAlchemy async URL, as DATABASE_URL expects it."""
        return f"postgresql+asyncpg://{self.user}@{LOOPBACK}:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        """libpq / asyncpg DSN."""
        return f"postgresql://{self.user}@{LOOPBACK}:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "run"

    def restart(self, timeout: float = POSTGRES_TIMEOUT) -> None:
        """Stop if running, start again on the same port and data, block until ready."""
        self.stop()
        stale_pid = self.data_dir / "postmaster.pid"  # left behind by kill(); blocks a restart
        if stale_pid.exists():
            stale_pid.unlink()
        self._process.start()
        self._wait_ready(timeout)

    def __repr__(self) -> str:
        return f"PostgresServer({self.dsn}, {'running' if self.running else 'stopped'})"

    # --- internals ------------------------------------------------------------------------

    def _initdb(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._os_user is not None:
            _chown_tree(self.workdir, self._os_user)
        if (self.data_dir / "PG_VERSION").is_file():
            return
        hint = (
            f" (initdb runs as OS user {self._os_user!r}: {self.workdir} must be reachable by it)"
            if self._os_user
            else ""
        )
        try:
            run_checked(
                [
                    str(self._bin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                    "--no-instructions",
                ],
                what="initdb",
                user=self._os_user,
                cwd=self.workdir,
                env={**os.environ, "LC_ALL": "C.UTF-8"},
            )
        except DevInfraError as exc:
            raise DevInfraError(f"{exc}{hint}") from exc

    def _wait_ready(self, timeout: float) -> None:
        what = f"PostgreSQL on {LOOPBACK}:{self.port}"
        deadline = time.monotonic() + timeout
        wait_until(
            functools.partial(port_accepts, self.port),
            timeout=timeout,
            what=what,
            processes=[self._process],
        )
        # Accepting TCP is not accepting queries (startup/recovery): ask pg_isready.
        wait_until(
            self._isready,
            timeout=max(0.0, deadline - time.monotonic()),
            what=what,
            processes=[self._process],
        )

    def _isready(self) -> bool:
        try:
            run_checked(
                [
                    str(self._bin / "pg_isready"),
                    "-q",
                    "-h",
                    LOOPBACK,
                    "-p",
                    str(self.port),
                    "-U",
                    self.user,
                    "-d",
                    "postgres",
                ],
                what="pg_isready",
                timeout=10.0,
            )
        except DevInfraError:
            return False
        return True

    def _create_database(self) -> None:
        try:
            run_checked(
                [
                    str(self._bin / "createdb"),
                    "-h",
                    LOOPBACK,
                    "-p",
                    str(self.port),
                    "-U",
                    self.user,
                    self.database,
                ],
                what=f"creating database {self.database!r}",
            )
        except DevInfraError as exc:
            if "already exists" not in str(exc):  # a reused workdir keeps its database
                raise
