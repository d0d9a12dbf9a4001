"""SQLite files on disk: the database, its WAL and its shared-memory file are readable by
their owner only (they hold password hashes and refresh tokens), whether `Database` creates
the file or finds one an earlier version left readable by everyone."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db.engine import Database


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The common umask, 022, under which SQLite's own files come out 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(db: Path) -> dict[str, str]:
    return {p.name: oct(stat.S_IMODE(p.stat().st_mode))
            for p in sorted(db.parent.iterdir()) if p.name.startswith(db.name)}


async def write_and_hold(url: str) -> tuple[Database, AsyncConnection]:
    """Write a row and keep the connection open, so the -wal and -shm files exist."""
    database = Database(url)
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE IF NOT EXISTS secrets (hash TEXT)"))
        await session.execute(text("INSERT INTO secrets VALUES ('$argon2id$...')"))
    held = await database.engine.connect()
    await held.execute(text("SELECT count(*) FROM secrets"))
    return database, held


async def test_a_new_database_and_its_wal_are_private(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "auth.db"
    database, held = await write_and_hold(f"sqlite+aiosqlite:///{db}")
    try:
        assert modes(db) == {"auth.db": "0o600", "auth.db-shm": "0o600", "auth.db-wal": "0o600"}
    finally:
        await held.close()
        await database.dispose()


async def test_a_database_left_readable_by_others_is_made_private(tmp_path: Path,
                                                                  open_umask: None) -> None:
    db = tmp_path / "auth.db"
    old = sqlite3.connect(db)  # as SQLite itself creates it: 0644, and its WAL alike
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE secrets (hash TEXT)")
    old.commit()
    assert modes(db)["auth.db-wal"] == "0o644"

    database, held = await write_and_hold(f"sqlite+aiosqlite:///{db}")
    try:
        assert modes(db) == {"auth.db": "0o600", "auth.db-shm": "0o600", "auth.db-wal": "0o600"}
    finally:
        old.close()
        await held.close()
        await database.dispose()


async def test_a_relative_path_and_memory_databases_work(tmp_path: Path, open_umask: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite+aiosqlite:///./here.db", "sqlite+aiosqlite://",
                "sqlite+aiosqlite:///:memory:"):
        database, held = await write_and_hold(url)
        await held.close()
        await database.dispose()
    assert modes(tmp_path / "here.db") == {"here.db": "0o600"}
    assert sorted(os.listdir(tmp_path)) == ["here.db"], "no file for the memory databases"


async def test_a_missing_folder_is_made_private(tmp_path: Path, open_umask: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The default URL's `.local/` (and any other missing folder) is made 0700, so a first
    run needs no setup and leaves nothing readable by others."""
    monkeypatch.chdir(tmp_path)
    database, held = await write_and_hold("sqlite+aiosqlite:///./.local/user.db")
    try:
        assert oct(stat.S_IMODE((tmp_path / ".local").stat().st_mode)) == "0o700"
        assert modes(tmp_path / ".local" / "user.db")["user.db"] == "0o600"
    finally:
        await held.close()
        await database.dispose()
