"""The route table: which service answers a path, and on what terms.

    table = load_route_table(settings.gateway_routes_file, settings)   # RouteTableError if bad
    route = table.match("/api/users/me")        # longest prefix, on whole segments
    route.upstream_path("/api/users/me")        # "/users/me"

The table is a TOML file (shape in gateway/README.md; gateway/routes.toml is the example). It
is validated whole before use: every problem is reported at once, each naming the file, the
route and the field, because a typo in a security setting (`pubic = true`, `permision = ...`)
must stop the gateway rather than be ignored. `RouteTableWatcher` reloads it when it changes;
a broken edit is logged and the table in force stays.

The parts: gateway/route_table.py (the model and matching, the hot path),
gateway/route_file.py (reading and validating), gateway/route_checks.py (single values).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from core.tasks import cancel_and_wait
from gateway.config import GatewaySettings
from gateway.route_checks import parse_rate_limit
from gateway.route_file import RouteTableError, load_route_table
from gateway.route_table import LEGACY, Route, RouteTable

__all__ = ["LEGACY", "Route", "RouteTable", "RouteTableError", "RouteTableWatcher",
           "load_route_table", "parse_rate_limit"]

log = logging.getLogger(__name__)


class RouteTableWatcher:
    """Reloads the table when its file changes, and hands each new table to `on_change`.

    The file's (mtime_ns, size, inode) is polled every `poll` seconds: a replace (editors,
    `mv`, a Kubernetes ConfigMap swap) changes the inode, an in-place write the other two.
    A file that no longer loads (or is gone) is logged as a warning once per change, and the
    table in force stays; a failing `on_change` is logged and the watch goes on."""

    def __init__(self, path: Path, settings: GatewaySettings,
                 on_change: Callable[[RouteTable], None], poll: float) -> None:
        if poll <= 0:
            raise ValueError("poll must be more than 0 seconds")
        self.path = path
        self.settings = settings
        self.on_change = on_change
        self.poll = poll
        self._task: asyncio.Task[None] | None = None
        self._seen: tuple[int, int, int] | None = None

    async def start(self) -> None:
        """Take the file as it is now as the loaded one, and watch for changes."""
        if self._task is not None:
            raise RuntimeError("the route table watcher is already started")
        self._seen = self._signature()
        self._task = asyncio.create_task(self._watch(), name="route-table-watcher")

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

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            signature = self._signature()
            if signature == self._seen:
                continue
            self._seen = signature
            if signature is None:
                log.warning("route table %s is gone; keeping the table in force", self.path)
                continue
            self._reload()

    def _reload(self) -> None:
        try:
            table = load_route_table(self.path, self.settings)
        except RouteTableError as exc:
            log.warning("route table not reloaded; keeping the table in force: %s", exc)
            return
        log.info("route table %s reloaded: %d routes", self.path, len(table))
        try:
            self.on_change(table)
        except Exception:
            log.exception("applying the reloaded route table %s failed", self.path)
