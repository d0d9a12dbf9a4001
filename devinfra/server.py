"""The lifecycle every throwaway server shares: one managed process, one workdir."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

from devinfra.files import Workdir
from devinfra.process import ManagedProcess


class ClosedOnExit:
    """As a context manager, leaving the block calls `close()`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalServer(ClosedOnExit):
    """Base of `KafkaBroker`, `PostgresServer` and `RedisServer`.

    Subclasses set `_process` and `_workdir` in `__init__` and add what is their own (start,
    readiness, restart). `stop()` keeps the data so `restart()` can come back; `close()`
    also removes a temp workdir; as a context manager, leaving the block closes.
    """

    _process: ManagedProcess
    _workdir: Workdir
    STOP_TIMEOUT = 30.0

    @property
    def workdir(self) -> Path:
        return self._workdir.path

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def stop(self, timeout: float | None = None) -> None:
        """Shut down cleanly (the server's own stop signal, SIGKILL after `timeout`)."""
        self._process.stop(self.STOP_TIMEOUT if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, for failover tests; the data stays for `restart()`."""
        self._process.kill()

    def close(self) -> None:
        """Stop, and delete the workdir if it is a temp dir we created."""
        self.stop()
        self._workdir.remove()

    def log_tail(self, lines: int = 40) -> str:
        return self._process.log_tail(lines)
