"""`RouteTableWatcher`: the route table reloaded when its file changes; a broken edit is
logged and the table in force stays."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.tasks import cancel_and_wait, periodically
from gateway.routes.file import RouteTableError, load_route_table
from gateway.routes.table import RouteTable

if TYPE_CHECKING:
    from gateway.config import GatewaySettings

__all__ = ["RouteTableWatcher"]

log = logging.getLogger(__name__)


class RouteTableWatcher:
    """Reloads the table when its file changes, and hands each new table to `on_change`.

    The file's (mtime_ns, size, inode) is polled every `poll` seconds: a replace (editors,
    `mv`, a Kubernetes ConfigMap swap) changes the inode, an in-place write the other two.
    A changed file is read only once it has stayed the same for `settle` seconds (default:
    one poll), so a file caught in the middle of an in-place rewrite is not taken for the
    new table. A file that no longer loads (or is gone), and one with no routes at all (an
    emptied file would otherwise be a valid table that answers 404 to everything), is logged
    as a warning once per change, and the table in force stays; a failing `on_change` is
    logged and the watch goes on."""

    def __init__(self, path: Path, settings: GatewaySettings,
                 on_change: Callable[[RouteTable], None], poll: float,
                 settle: float | None = None) -> None:
        if poll <= 0:
            raise ValueError("poll must be more than 0 seconds")
        if settle is not None and settle < 0:
            raise ValueError("settle must be 0 seconds or more")
        self.path = path
        self.settings = settings
        self.on_change = on_change
        self.poll = poll
        self.settle = poll if settle is None else settle
        self._task: asyncio.Task[None] | None = None
        self._seen: tuple[int, int, int] | None = None
        self._changing: tuple[int, int, int] | None = None  # a new signature, settling
        self._changing_since = 0.0

    async def start(self) -> None:
        """Take the file as it is now as the loaded one, and watch for changes."""
        if self._task is not None:
            raise RuntimeError("the route table watcher is already started")
        self._seen = self._signature()
        self._task = asyncio.create_task(
            periodically(self._look, self.poll, first="after_interval", report="streak",
                         log=log, failed="route table watch failed",
                         resumed="route table watched again"),
            name="route-table-watcher")

    async def stop(self) -> None:
        """Stop watching (and wait for the watch to end). Safe to call twice."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    async def _look(self) -> None:
        """One look at the file: reload it once it changed and then stayed the same."""
        signature = self._signature()
        if signature == self._seen:
            self._changing = None
            return
        if signature is None:
            self._seen = self._changing = None
            log.warning("route table %s is gone; keeping the table in force", self.path)
            return
        now = time.monotonic()
        if signature != self._changing:
            self._changing, self._changing_since = signature, now
            log.debug("route table %s changed; reading it once it has stayed the same "
                      "for %gs", self.path, self.settle)
            return
        if now - self._changing_since < self.settle:
            return
        self._seen, self._changing = signature, None
        self._reload()

    def _reload(self) -> None:
        try:
            table = load_route_table(self.path, self.settings)
        except RouteTableError as exc:
            log.warning("route table not reloaded; keeping the table in force: %s", exc)
            return
        if not table.routes:
            log.warning("route table %s not reloaded: it has no routes (emptied, or caught "
                        "while being written); keeping the table in force. Restart the "
                        "gateway to serve with no routes", self.path)
            return
        log.info("route table %s reloaded: %d routes", self.path, len(table))
        try:
            self.on_change(table)
        except Exception:
            log.exception("applying the reloaded route table %s failed", self.path)
