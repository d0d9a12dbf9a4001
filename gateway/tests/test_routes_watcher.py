"""Reloading the route table when its file changes: a good edit reaches `on_change` once the
file has stopped changing, a bad one (or a deleted file, or one with no routes) is logged and
changes nothing, and stop() leaves no task behind."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import GatewaySettings
from gateway.routes import RouteTable, RouteTableWatcher
from tests.helpers import eventually

POLL = 0.01
LOGGER = "gateway.routes"
SETTINGS = GatewaySettings(_env_file=None)


def table_text(*names: str) -> str:
    return "".join(f'[[routes]]\nname = "{n}"\nprefix = "/api/{n}"\nservice = "{n}"\n'
                   for n in names)


def write(path: Path, text: str) -> None:
    """(A few bytes: no need to leave the event loop.)"""
    path.write_text(text)


class Changes:
    """What the watcher handed over."""

    def __init__(self) -> None:
        self.tables: list[RouteTable] = []

    def __call__(self, table: RouteTable) -> None:
        self.tables.append(table)

    def names(self) -> list[list[str]]:
        return [[r.name for r in table] for table in self.tables]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "routes.toml"
    write(path, table_text("users"))
    return path


@pytest.fixture
def changes() -> Changes:
    return Changes()


@pytest.fixture
async def watcher(path: Path, changes: Changes) -> AsyncIterator[RouteTableWatcher]:
    watcher = RouteTableWatcher(path, SETTINGS, changes, poll=POLL)
    await watcher.start()
    yield watcher
    await watcher.stop()


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


async def test_an_edit_is_loaded_and_handed_over(path: Path, changes: Changes,
                                                 watcher: RouteTableWatcher) -> None:
    write(path, table_text("users", "drivers"))  # in place: size and mtime change
    await eventually(lambda: changes.names() == [["users", "drivers"]], timeout=5)
    replacement = path.with_suffix(".new")  # as editors and ConfigMaps do: a new inode
    write(replacement, table_text("users", "drivers", "notifications"))
    os.replace(replacement, path)
    await eventually(lambda: len(changes.tables) == 2, timeout=5)
    assert changes.names()[-1] == ["users", "drivers", "notifications"]
    assert changes.tables[-1].match("/api/notifications/1").name == "notifications"  # type: ignore[union-attr]


async def test_an_unchanged_file_is_not_reloaded(path: Path, changes: Changes,
                                                 watcher: RouteTableWatcher,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, LOGGER):
        write(path, table_text("users", "a"))
        await eventually(lambda: len(changes.tables) == 1, timeout=5)
        await asyncio.sleep(POLL * 10)  # ten more polls of the same file
    assert len(changes.tables) == 1
    assert sum("reloaded" in r.getMessage() for r in caplog.records) == 1


async def test_a_broken_edit_is_logged_and_the_table_in_force_stays(
        path: Path, changes: Changes, watcher: RouteTableWatcher,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        write(path, table_text("users") + "pubic = true\n")
        await eventually(lambda: logged(caplog, 'unknown key "pubic"'), timeout=5)
        assert logged(caplog, "keeping the table in force")
        assert changes.tables == []
        write(path, "[[routes]\n")  # not even TOML
        await eventually(lambda: logged(caplog, "is not valid TOML"), timeout=5)
        assert changes.tables == []
    write(path, table_text("users", "fixed"))  # fixed: loaded
    await eventually(lambda: changes.names() == [["users", "fixed"]], timeout=5)


async def test_an_emptied_file_is_refused_and_the_table_in_force_stays(
        path: Path, changes: Changes, watcher: RouteTableWatcher,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        for text in ("", '[defaults]\ntimeout = 5.0\n'):  # truncated; or every route removed
            caplog.clear()
            write(path, text)
            await eventually(lambda: bool(changes.tables) or logged(caplog, "no routes"),
                             timeout=5)
            assert changes.tables == []
            assert logged(caplog, "keeping the table in force")
    write(path, table_text("users", "again"))
    await eventually(lambda: changes.names() == [["users", "again"]], timeout=5)


async def test_a_file_caught_mid_rewrite_is_read_only_once_it_stops_changing(
        path: Path, changes: Changes, caplog: pytest.LogCaptureFixture) -> None:
    # An in-place rewrite of a three-route table, caught after its first route: still a
    # valid table, missing two thirds of the routes.
    watcher = RouteTableWatcher(path, SETTINGS, changes, poll=POLL, settle=1.0)
    await watcher.start()
    try:
        with caplog.at_level(logging.DEBUG, LOGGER):
            write(path, table_text("users"))
            with path.open("a") as file:
                file.write(table_text("drivers"))
            await eventually(lambda: bool(changes.tables) or any(
                "changed" in r.getMessage() for r in caplog.records), timeout=5)
            with path.open("a") as file:  # the writer goes on
                file.write(table_text("notifications"))
        await eventually(lambda: bool(changes.tables), timeout=10)
        assert changes.names() == [["users", "drivers", "notifications"]]
    finally:
        await watcher.stop()


async def test_a_deleted_file_is_logged_and_the_table_in_force_stays(
        path: Path, changes: Changes, watcher: RouteTableWatcher,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        os.remove(path)
        await eventually(lambda: logged(caplog, "is gone"), timeout=5)
    assert changes.tables == []
    write(path, table_text("users", "back"))  # back: loaded
    await eventually(lambda: changes.names() == [["users", "back"]], timeout=5)


async def test_a_file_missing_at_start_is_loaded_when_it_appears(tmp_path: Path,
                                                                 changes: Changes) -> None:
    path = tmp_path / "later.toml"
    watcher = RouteTableWatcher(path, SETTINGS,
                                changes, poll=POLL)
    await watcher.start()
    try:
        write(path, table_text("late"))
        await eventually(lambda: changes.names() == [["late"]], timeout=5)
    finally:
        await watcher.stop()


async def test_a_failing_on_change_is_logged_and_the_watch_goes_on(
        path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[RouteTable] = []

    def on_change(table: RouteTable) -> None:
        seen.append(table)
        if len(seen) == 1:
            raise RuntimeError("boom")

    watcher = RouteTableWatcher(path, SETTINGS,
                                on_change, poll=POLL)
    await watcher.start()
    try:
        with caplog.at_level(logging.ERROR, LOGGER):
            write(path, table_text("users", "one"))
            await eventually(lambda: any("boom" in (r.exc_text or "") for r in caplog.records),
                             timeout=5)
        write(path, table_text("users", "two", "three"))
        await eventually(lambda: len(seen) == 2, timeout=5)
    finally:
        await watcher.stop()


async def test_stop_cancels_and_awaits_the_watch(path: Path, changes: Changes) -> None:
    watcher = RouteTableWatcher(path, SETTINGS,
                                changes, poll=POLL)
    await watcher.stop()  # before start: nothing to do
    await watcher.start()
    with pytest.raises(RuntimeError, match="already started"):
        await watcher.start()
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "route-table-watcher"]
    assert len(tasks) == 1
    await watcher.stop()
    assert tasks[0].done() and tasks[0].cancelled()
    await watcher.stop()  # twice: fine
    await watcher.start()  # and it can start again
    await watcher.stop()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "route-table-watcher"]


def test_the_poll_interval_must_be_positive(path: Path, changes: Changes) -> None:
    with pytest.raises(ValueError, match="poll"):
        RouteTableWatcher(path, SETTINGS,
                          changes, poll=0)
    with pytest.raises(ValueError, match="settle"):
        RouteTableWatcher(path, SETTINGS, changes, poll=1, settle=-1)
