"""File helpers shared by the throwaway servers: work directories, locks, log tails."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def tail(path: Path, lines: int = 40, max_bytes: int = 64 * 1024) -> str:
    """The last `lines` lines of a text file ('' if it does not exist), read without loading it."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class Workdir:
    """A server's working directory: either the caller's (kept) or a temp dir we own (removed).

    Owned temp dirs are removed by `remove()` and, at the latest, when the interpreter exits, so
    a test session that forgets to close a server does not fill /tmp.
    """

    def __init__(self, path: Path, owned: bool) -> None:
        self.path = path
        self.owned = owned
        if owned:
            _owned_dirs.add(path)

    @classmethod
    def create(cls, given: Path | None, prefix: str = "server") -> Workdir:
        if given is not None:
            given = Path(given).resolve()
            given.mkdir(parents=True, exist_ok=True)
            return cls(given, owned=False)
        _sweep_orphans()
        path = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{prefix}-"))
        (path / _OWNER_FILE).write_text(f"{os.getpid()}\n")
        return cls(path, owned=True)

    def remove(self) -> None:
        """Delete the directory if we created it; a caller's directory is left alone."""
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)
            _owned_dirs.discard(self.path)


def _sweep_orphans() -> None:
    """Delete temp workdirs whose creating process is gone (it was SIGKILLed, say).

    Their servers died with it (see process.ManagedProcess), so only the files remain.
    """
    for path in Path(tempfile.gettempdir()).glob(f"{_TEMP_PREFIX}*"):
        try:
            pid = int((path / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_owned_dirs() -> None:
    for path in list(_owned_dirs):
        shutil.rmtree(path, ignore_errors=True)


_TEMP_PREFIX = "kfm-"
_OWNER_FILE = ".kfm-owner"
_owned_dirs: set[Path] = set()
# process.py imports this module before registering its own exit hook; atexit runs hooks LIFO,
# so leftover processes are stopped before their directories are removed.
atexit.register(_remove_owned_dirs)
